"""The daemon: stream -> transactions -> batches -> plan (chunk, embed) -> write -> confirm.

`daemon.Connector` runs the reader (`reader`, feeding `queue`), the applier (`applier`: the
`planner` makes finished writes, `sink.writer` writes them), the durability thread and the
monitor, and copies the tables from a snapshot (`copy`) when it starts without a usable
checkpoint. It may import `core`, `source`, `sink` and `embed`; never `ops` or `query`.
"""
