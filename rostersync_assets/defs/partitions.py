"""The one partitioning of every rostersync asset: the district (a dynamic partition per slug)."""

import dagster as dg

districts_partitions = dg.DynamicPartitionsDefinition(name="districts")

OWNERS = ["team:data-platform"]
DISTRICT_TAG = "rostersync/district"
