"""boltraft.transport: the wire codec (``codec``) and the node's ZeroMQ transport
(``zmq_transport.PeerTransport``)."""
