# shellcheck shell=bash
# Sourced by scripts/build-static and scripts/test: the one definition of the static
# build (glibc, crt-static, release, its own target dir target/static, so the RUSTFLAGS
# never invalidate the normal build cache). The tests build in it too, so the workspace
# is compiled once for the trainer binary and the tests.
static_target=x86_64-unknown-linux-gnu
static_dir=target/static
# shellcheck disable=SC2034 # used by the scripts that source this file
static_bin="$static_dir/$static_target/release/mlci"

# `static_cargo SUBCOMMAND ARGS…`: cargo SUBCOMMAND in the static build.
static_cargo() {
	local subcommand=$1
	shift
	RUSTFLAGS="-C target-feature=+crt-static" cargo "$subcommand" --release --locked \
		--target "$static_target" --target-dir "$static_dir" "$@"
}
