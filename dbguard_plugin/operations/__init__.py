"""Operations that change or judge the guarded database: restore, rollback, move,
profile switch and delete, recovery, doctor. Each takes the Guard (the host API) and
the collaborators it uses; the CLI and the hosts call them.
"""
