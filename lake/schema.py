"""Iceberg table layout: one table per common resource type, one for the rest.

Columns in clear are those an analyst may see (docs/compliance/encryption.md):
type, id, version, timestamps of the record, deleted flag, pseudonymous
patient key, status, code, the year of the clinical date, quantity value and
unit. ``resource`` (the whole resource) and ``phi`` (PHI elements one by one)
hold sealed values only (``security.ciphertext``).

Partitioning and sort order are chosen for patient-centric reads with large
files (measurements in docs/lake.md):

* partition ``bucket(N, patient_key)`` (N = ``lake.patient_buckets``, default 8):
  a patient's rows live in one of N partitions, so a patient read prunes to 1/N
  of the files while each group commit writes at most N files per table;
  no time partition, because month partitions multiplied the file count by the
  patient's span of years and made every file small;
* sort ``patient_key, effective_year`` inside each file, with row groups of 8,192
  rows, so a patient's rows are contiguous and row-group statistics skip the rest.
"""

from __future__ import annotations

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

TABLE_OF_TYPE: dict[str, str] = {
    t: t.lower()
    for t in (
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationStatement",
        "Medication",
        "Immunization",
        "AllergyIntolerance",
        "DiagnosticReport",
        "DocumentReference",
        "CarePlan",
        "CareTeam",
        "Goal",
        "ServiceRequest",
        "Claim",
        "ExplanationOfBenefit",
        "Coverage",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Device",
        "ImagingStudy",
        "Provenance",
    )
}
OTHER_TABLE = "other_resource"
JOURNAL_SEQ_PROPERTY = "fhirlake.journal-seq"

SCHEMA = Schema(
    NestedField(1, "resource_type", StringType(), required=True),
    NestedField(2, "id", StringType(), required=True),
    NestedField(3, "version", LongType(), required=True),
    NestedField(4, "last_updated", TimestamptzType(), required=True),
    NestedField(5, "deleted", BooleanType(), required=True),
    NestedField(6, "patient_key", StringType(), required=False),
    NestedField(7, "status", StringType(), required=False),
    NestedField(8, "code_system", StringType(), required=False),
    NestedField(9, "code", StringType(), required=False),
    NestedField(10, "effective_year", IntegerType(), required=False),
    NestedField(11, "value_num", DoubleType(), required=False),
    NestedField(12, "value_unit", StringType(), required=False),
    NestedField(13, "journal_seq", LongType(), required=True),
    NestedField(14, "resource", BinaryType(), required=False),
    NestedField(15, "phi", MapType(16, StringType(), 17, BinaryType(), value_required=True), required=False),
)

SORT_ORDER = SortOrder(
    SortField(source_id=6, transform=IdentityTransform()),
    SortField(source_id=10, transform=IdentityTransform()),
)


def table_for(resource_type: str) -> str:
    return TABLE_OF_TYPE.get(resource_type, OTHER_TABLE)


def all_tables() -> list[str]:
    return sorted({*TABLE_OF_TYPE.values(), OTHER_TABLE})


def partition_spec(buckets: int) -> PartitionSpec:
    return PartitionSpec(
        PartitionField(source_id=6, field_id=1000, transform=BucketTransform(buckets), name="patient_bucket")
    )
