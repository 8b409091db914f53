# Sourced by the benchmarks, from the repository's root: installs what is missing, builds and
# installs the extension, and brings in the cluster and mock helpers.
bash scripts/install-deps.sh >/dev/null
bash scripts/build-install.sh
source test/lib/cluster.sh
source test/lib/mock.sh
