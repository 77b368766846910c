"""The daemon: stream -> transactions -> batches -> plan -> stage -> flip -> confirm.

`daemon.Connector` runs the reader (`reader`, feeding `queue`), the applier (`applier`: the
`planner` makes finished writes, `sink.writer` stages them and flips), the stager (`stager`:
staging one slice while the next is planned), the durability thread and the monitor, and
copies the tables from a snapshot (`copy`) when it starts without a usable checkpoint. It may
import `core`, `source`, `sink` and `embed`; never `ops` or `query`.
"""
