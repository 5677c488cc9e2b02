"""boltraft.server"""
