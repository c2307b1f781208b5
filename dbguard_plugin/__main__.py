from dbguard_plugin.cli import main

main()
