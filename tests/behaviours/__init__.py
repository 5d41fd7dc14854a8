"""nwbehave: a small static C program that performs one attacker behaviour (or its benign look-alike)
per subcommand with the real syscalls; build.build() compiles it for the behaviour tests."""
