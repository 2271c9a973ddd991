# The two commands of the README quick start. Both set up the machine themselves (idempotent).
.PHONY: demo test bench package

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench_snapshot.sh
	SKIP_INSTALL=1 bash scripts/bench_triggers.sh
	SKIP_INSTALL=1 bash scripts/bench_cleanup.sh

# dist/: a Debian package and a tarball per major (scripts/package.sh; MAJORS="15 16" for some).
package:
	bash scripts/package.sh
