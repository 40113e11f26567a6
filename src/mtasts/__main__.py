from mtasts.cli.main import main

main()
