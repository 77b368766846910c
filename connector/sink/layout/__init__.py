"""Index names as aliases of physical indexes, and what each physical index was built with.

Queries (`search()`, `answer()`, the CLI, any external client) use the configured index name: a
RediSearch alias (FT.ALIASADD) of a physical index with a key prefix of its own. The first
physical index of a name, `<name>.v1`, keeps the name as its prefix, so an index an earlier
connector built under the name itself is adopted as it is (Redis indexes its hashes again under
`<name>.v1`; nothing is embedded or copied). A rebuild (flow.rebuild) makes `<name>.v2` under the
prefix `<name>.v2`, and so on, and switches the alias to it in one step.

Names and owners: index names never hold a `.` (config refuses it), so no index name is another
index's physical name or key prefix (`articles` and `articles_v2` are two indexes, whatever is
rebuilt). Connectors before this one named rebuilt indexes `<name>_v<N>`: their records keep
those names, and an index name one of them uses is refused (`owners.refuse_claimed`). Adoption only
takes an index that is provably a connector's under its own name. Each physical index records
its owner, the slot that writes it (and the database system id), in its meta: a connector of
another slot refuses to write it (`claim`) until `connector slot take-over` hands it over.

The alias's record, `connector:index:<name>` (a hash), says which physical index is current,
which one a rebuild is building and how far it got, and which one is being dropped. Each physical
index's meta (`<prefix>:meta`) says what it was built with: the model, each table's settings and
the schema's metadata fields. The daemon compares that with its settings when it starts
(`compare`): metadata columns added or removed are changed in place; anything else needs a
rebuild.

Words of an index's life, used throughout the code:

- index name, or alias: what the settings (`[[tables]] index`) and every query name; a
  RediSearch alias of one physical index at a time, never an index itself.
- physical index: one FT index, `<name>.v<N>`, over the keys of its own prefix (their layout:
  core.keys.Keyspace).
- record: the alias's hash, `connector:index:<name>` (`Record`): which physical index is
  current, building and retiring, the rebuild's progress, and the generation.
- built: what a physical index was built with (`Built`, kept in its meta);
  `built_from_settings` is what the settings ask for, and `compare` what getting there takes.
- building: the physical index a rebuild (flow.rebuild) copies into; every change is written to
  it and to the current one until the switch moves the alias to it in one step.
- retiring: the physical index before the last switch, dropped in steps between batches.
- generation: a number in the record bumped at each change a searcher must notice (a switch,
  an FT.ALTER): a searcher that sees it move reads the record again.
- layout: one index name as the daemon starts with it (flow.targets.Layout): its record, what
  its current index was built with, what a rebuild builds.
- target: the physical indexes written with one model (flow.targets.Target): the current ones,
  or a rebuild's new one; each target has its own writer, planner and collector (flow.applier).
"""

from connector.sink.layout.built import (
    Built,
    Change,
    built_from_settings,
    compare,
    create_physical,
    current_specs,
    read_built,
    schema_fields,
)
from connector.sink.layout.opening import carry_dead_letters, open_alias
from connector.sink.layout.owners import check_owner, claim, read_owner, set_owner
from connector.sink.layout.rebuilds import (
    abandon_building,
    alter,
    begin_rebuild,
    end_backfill,
    mark_copied,
    record_progress,
    retire_step,
    switch,
    switch_together,
)
from connector.sink.layout.records import (
    Owner,
    Physical,
    Record,
    current_keys,
    drop_all_keys,
    drop_keys,
    physical_name,
    physical_prefix,
    read_record,
)

__all__ = [
    "Built",
    "Change",
    "Owner",
    "Physical",
    "Record",
    "abandon_building",
    "alter",
    "begin_rebuild",
    "built_from_settings",
    "carry_dead_letters",
    "check_owner",
    "claim",
    "compare",
    "create_physical",
    "current_keys",
    "current_specs",
    "drop_all_keys",
    "drop_keys",
    "end_backfill",
    "mark_copied",
    "open_alias",
    "physical_name",
    "physical_prefix",
    "read_built",
    "read_owner",
    "read_record",
    "record_progress",
    "retire_step",
    "schema_fields",
    "set_owner",
    "switch",
    "switch_together",
]
