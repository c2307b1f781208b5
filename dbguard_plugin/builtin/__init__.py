"""Built-in plugins: hookimpls the plugin manager registers before any third-party one.

The manager registers them by module name, so nothing below imports this package.
"""
