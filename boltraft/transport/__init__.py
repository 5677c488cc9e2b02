"""The wire: ``codec`` (versioned msgpack frames), ``zmq_transport`` (the node's ROUTER and
per-peer DEALERs), ``rpc`` (the client's request channel) and ``protocol_doc`` (the error-code
table of docs/protocol.md)."""
