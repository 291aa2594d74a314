# The image for the `loader` and `cron` services: loans-load, loans-rollup and loans-verify in
# /usr/local/bin, plus cron and logrotate (for cron.log). Built by `docker compose up`; see
# docker-compose.yml. The tools run as the unprivileged user loans; only the cron service's
# entry point runs as root, to run cron (docker/cron-entrypoint).

# --- build: the workspace's binaries (the postgres crate needs Rust 1.85 or later) -------------
FROM rust:1.93-slim-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so this layer is rebuilt only when a manifest or
# Cargo.lock changes, not on every edit of the code. Every workspace member's manifest is copied,
# so the stub build resolves exactly the dependency graph the real build will.
COPY Cargo.toml Cargo.lock ./
COPY crates/loans-core/Cargo.toml crates/loans-core/
COPY crates/loans-load/Cargo.toml crates/loans-load/
COPY crates/loans-rollup/Cargo.toml crates/loans-rollup/
COPY crates/loans-verify/Cargo.toml crates/loans-verify/
COPY crates/loans-testkit/Cargo.toml crates/loans-testkit/
COPY crates/loans-bench/Cargo.toml crates/loans-bench/
RUN for lib in loans-core loans-testkit; do \
        mkdir -p "crates/$lib/src" && touch "crates/$lib/src/lib.rs"; \
    done \
 && for bin in loans-load loans-rollup loans-verify loans-bench; do \
        mkdir -p "crates/$bin/src" && echo 'fn main() {}' > "crates/$bin/src/main.rs"; \
    done \
 && mkdir -p crates/loans-testkit/src/bin \
 && echo 'fn main() {}' > crates/loans-testkit/src/bin/loans-sample.rs \
 && cargo build --release --locked -p loans-load -p loans-rollup -p loans-verify

# Then the real sources; touch them so cargo does not take the stubs' builds as newer.
COPY crates crates
RUN find crates -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p loans-load -p loans-rollup -p loans-verify

# --- runtime: Debian slim with cron -------------------------------------------------------------
FROM debian:bookworm-slim

# Debian's packages are pinned by the release; their versions move only with security fixes.
# pam_loginuid cannot set a login uid inside a container and would make cron refuse every job,
# so it is turned off; Debian's own maintenance jobs are removed, leaving only ours.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates cron logrotate \
 && rm -rf /var/lib/apt/lists/* \
 && sed -i '/pam_loginuid.so/s/^/# /' /etc/pam.d/cron \
 && rm -f /etc/cron.d/* /etc/cron.daily/*

COPY --from=build /src/target/release/loans-load /src/target/release/loans-rollup \
     /src/target/release/loans-verify /usr/local/bin/
COPY docker/cron-entrypoint /usr/local/bin/loans-cron-entrypoint
COPY docker/cron-job /usr/local/bin/loans-cron-job
COPY docker/cron-health /usr/local/bin/loans-cron-health
COPY docker/crontab /etc/cron.d/loans
# The user loans, with a fixed uid, so that files it writes to a bind mount have the same owner on
# every build; USER names it by number, which the host can resolve too.
RUN chmod 0644 /etc/cron.d/loans \
 && groupadd --system --gid 10001 loans \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin loans

ENV TZ=UTC
USER 10001:10001
CMD ["loans-load", "--help"]
