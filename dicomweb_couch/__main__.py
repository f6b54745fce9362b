from dicomweb_couch.cli import main

main()
