from charlm.cli import main

main(prog_name="charlm")
