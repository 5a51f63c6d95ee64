"""The FHIR gateway: HTTP parsing, content negotiation, error mapping. Thin by design."""
