"""The SQLite engine: consistent snapshots, backups, verification, previews and facts.
"""
