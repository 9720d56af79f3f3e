from flowcloud.cli import main

main()
