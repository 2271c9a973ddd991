# The two commands of the README quick start. Both set up the machine themselves (idempotent).
.PHONY: demo test bench

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench_snapshot.sh
	SKIP_INSTALL=1 bash scripts/bench_triggers.sh
	SKIP_INSTALL=1 bash scripts/bench_cleanup.sh
