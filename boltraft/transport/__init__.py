"""boltraft.transport"""
