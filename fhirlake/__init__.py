"""fhirlake: FHIR R4 ingestion service and Apache Iceberg data lake."""

__version__ = "0.1.0"
