# The two commands a new user needs (see README.md).
.PHONY: demo test bench

demo:
	scripts/setup
	.venv/bin/kcbus demo

test:
	scripts/test

bench:
	scripts/setup
	.venv/bin/python -m bench
