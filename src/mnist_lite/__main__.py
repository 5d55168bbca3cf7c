from mnist_lite.cli import main

main()
