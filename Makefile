# The two commands a new user needs (see README.md): `make demo` and `make test`.
# ARGS passes options on, e.g. `make demo ARGS=--once` or `make test ARGS="-k xoev"`.
.PHONY: demo test bench

demo:
	scripts/setup
	.venv/bin/kcbus demo $(ARGS)

test:
	scripts/test $(ARGS)

bench:
	scripts/setup
	.venv/bin/python -m bench $(ARGS)
