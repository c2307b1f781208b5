"""What the operator configured: the config file, the profiles and the profile file.
"""
