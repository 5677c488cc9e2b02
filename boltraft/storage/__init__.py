"""boltraft.storage"""
