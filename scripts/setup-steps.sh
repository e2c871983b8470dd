# Sourced, not run: the set-up steps that `make bench` needs (scripts/setup.sh)
# and that `make test` needs too (tests/infra/setup.sh, which adds its own).
# The one place each step is written. Every step checks first, does only what is
# missing, and prints one line: `setup: <step> <what> (N s)`.
#
#   source scripts/setup-steps.sh    # from the repository root, under set -euo pipefail
#   setup_args "$@"                  # --check: report what would be done, change nothing
#   setup_bench [tests]              # packages (+ the test group's), then the venv beside the Docker
#                                    # engine and base image, then the check that needs both
#
# shellcheck shell=bash

REPO=$PWD
CACHE=$REPO/.cache
BASE_DIR=$CACHE/base-image

BASE_IMAGE=bench-base/debian:bookworm
BASE_SUITE=bookworm
BASE_MIRROR=http://deb.debian.org/debian
BASE_INCLUDE=python3,procps

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
T0=$EPOCHREALTIME
CHECK=0

say() { printf 'setup: %-10s %s\n' "$1" "$2"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
has() { command -v "$1" >/dev/null; }

# --check: every step says what it would do (`would ...`) and does nothing; exit 0 all
# done already, 3 something to do. Otherwise: the set-up lock, and on with the steps.
setup_args() {
    case ${1:-} in
    "") ;;
    --check) CHECK=1 ;;
    *) die "unknown argument $1 (expected: --check, to report what would be done)" ;;
    esac
    ((CHECK == 1)) && return
    mkdir -p "$CACHE"
    # Several people share this tree: a second concurrent run waits instead of racing.
    exec 9>"$CACHE/setup.lock"
    flock 9
}

# In --check mode: say what step $1 would do, remember that something is left, return 0.
TODO=0
would() {
    say "$1" "would $2"
    TODO=1
}

setup_done() {
    if ((CHECK == 1)); then
        say done "checked in $(elapsed "$T0") s: $(((TODO == 1)) && echo "something to do" || echo "nothing to do")"
        exit $((TODO == 1 ? 3 : 0))
    fi
    say done "in $(elapsed "$T0") s"
}

# --- system packages -------------------------------------------------------
# want LABEL PACKAGE TEST...: install PACKAGE unless TEST passes.
want() {
    local label=$1 package=$2
    shift 2
    CHECKED+=("$label")
    "$@" || MISSING+=("$package")
}
# Debian ships ensurepip (which venv needs) separately, in python3-venv.
venv_possible() { [[ -x .venv/bin/python ]] || python3 -c 'import ensurepip' 2>/dev/null; }

step_packages() { # groups: bench (what `make bench` needs), tests (what only the tests use)
    local group
    CHECKED=() MISSING=()
    for group in "$@"; do
        case $group in
        bench)
            want dockerd docker.io has dockerd
            want debootstrap debootstrap has debootstrap
            want ensurepip python3-venv venv_possible
            ;;
        tests)
            want sshd openssh-server test -x /usr/sbin/sshd
            # The campaign summary is opened in headless Chromium; its Chinese labels need a CJK font.
            want chromium chromium has chromium
            want "CJK font" fonts-wqy-microhei test -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
            # The Slurm backend's tests run on a real cluster (tests/infra/slurm.sh).
            want slurmctld slurmctld has slurmctld
            want slurmd slurmd has slurmd
            want sbatch slurm-client has sbatch
            want munged munge has munged
            ;;
        *) die "step_packages: unknown group $group (expected bench or tests)" ;;
        esac
    done
    local checked
    checked=$(IFS=,; echo "${CHECKED[*]}")
    if ((${#MISSING[@]} == 0)); then
        say packages "already installed (${checked//,/, })"
        return
    fi
    if ((CHECK == 1)); then
        would packages "apt-get install ${MISSING[*]}"
        return
    fi
    local t=$EPOCHREALTIME
    export DEBIAN_FRONTEND=noninteractive
    local log=$CACHE/apt.log
    { apt-get update -q && apt-get install -y -q "${MISSING[@]}"; } >"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "apt-get install ${MISSING[*]} failed (log: .cache/apt.log)"; }
    say packages "installed ${MISSING[*]} ($(elapsed "$t") s)"
}

# --- venv ------------------------------------------------------------------
step_venv() {
    local created=""
    if [[ ! -x .venv/bin/python ]]; then
        if ((CHECK == 1)); then
            would venv "create .venv and install requirements.txt"
            return
        fi
        python3 -m venv .venv
        created="created .venv, "
    fi
    local pyver
    pyver=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # The containers mount .venv/lib/python3.11/site-packages and run Debian's 3.11.
    [[ $pyver == 3.11 ]] || die ".venv has Python $pyver; the base image has 3.11 (remove .venv, use a python3.11)"

    local want stamp=.venv/.requirements.sha256
    want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [[ -z $created && -f $stamp && $(<"$stamp") == "$want" ]]; then
        say venv "up to date (requirements.txt, pyproject.toml unchanged)"
        return
    fi
    if ((CHECK == 1)); then
        would venv "install requirements.txt (changed since .venv was made)"
        return
    fi
    local t=$EPOCHREALTIME
    # pip byte-compiles what it installs, on purpose: the containers mount this
    # site-packages read-only and could not write torch's .pyc files themselves.
    .venv/bin/python -m pip install -q -r requirements.txt
    # The `bench` command (pyproject's entry point). compat mode is a plain .pth
    # path entry: the containers that mount this site-packages just ignore it.
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
    echo "$want" >"$stamp"
    say venv "${created}installed requirements.txt and the bench command ($(elapsed "$t") s)"
}

# --- docker engine ---------------------------------------------------------
daemon_up() {
    local c
    for c in docker /usr/bin/docker /usr/local/bin/docker; do
        has "$c" && "$c" info >/dev/null 2>&1 && return 0
    done
    return 1
}

step_dockerd() {
    if daemon_up; then
        say dockerd "already running"
    elif ((CHECK == 1)); then
        would dockerd "start dockerd --bridge=none --iptables=false"
        return
    else
        local t=$EPOCHREALTIME
        # No bridge/iptables: there is no NAT here and every container uses --net=host.
        # 9>&-: a daemon must not inherit the lock, or every later run waits for it.
        setsid -f dockerd --bridge=none --iptables=false --ip6tables=false \
            >>"$CACHE/dockerd.log" 2>&1 </dev/null 9>&-
        local deadline=$((SECONDS + 60))
        until daemon_up; do
            if ((SECONDS >= deadline)); then
                tail -n 20 "$CACHE/dockerd.log" >&2 || true
                die "dockerd did not answer within 60 s (log: .cache/dockerd.log)"
            fi
            sleep 0.5
        done
        say dockerd "started ($(elapsed "$t") s, log .cache/dockerd.log)"
    fi

    # Two CLIs may be installed (docker.io's 20.10 and a newer one in /usr/local/bin).
    # The harness calls plain `docker`, so that one must work; the others are reported.
    local c out
    for c in /usr/local/bin/docker /usr/bin/docker; do
        [[ -x $c ]] || continue
        if out=$("$c" version --format '{{.Client.Version}} -> daemon {{.Server.Version}} (API {{.Server.APIVersion}})' 2>&1); then
            say docker "$c: client $out"
        else
            say docker "WARNING: $c cannot talk to the daemon: ${out//$'\n'/ }"
        fi
    done
    has docker || die "no docker on PATH"
    docker version >/dev/null 2>&1 || die "plain \`docker\` ($(command -v docker)) cannot talk to the daemon"
}

# --- base image --------------------------------------------------------------
step_base_image() {
    # The key names the debootstrap inputs: change --include and the tarball is rebuilt.
    local key tarball have
    key=$(printf '%s\n' "$BASE_SUITE" minbase "$BASE_INCLUDE" "$BASE_MIRROR" | sha256sum | cut -c1-16)
    tarball=$BASE_DIR/$BASE_SUITE-minbase-$key.tar
    ((CHECK == 1)) || mkdir -p "$BASE_DIR"
    have=$(docker image inspect --format '{{index .Config.Labels "bench.base.key"}}' "$BASE_IMAGE" 2>/dev/null || true)
    if [[ $have == "$key" ]]; then
        say image "$BASE_IMAGE present"
    elif ((CHECK == 1)); then
        would image "build $BASE_IMAGE $([[ -f $tarball ]] && echo "from the cached tarball" || echo "with debootstrap $BASE_SUITE")"
    else
        local t=$EPOCHREALTIME how="from cached tarball"
        if [[ ! -f $tarball ]]; then
            local rootfs=$BASE_DIR/rootfs.tmp
            rm -rf "$rootfs"
            debootstrap --variant=minbase --include="$BASE_INCLUDE" "$BASE_SUITE" "$rootfs" "$BASE_MIRROR" \
                >"$BASE_DIR/debootstrap.log" 2>&1 ||
                { tail -n 20 "$BASE_DIR/debootstrap.log" >&2; die "debootstrap failed (log: .cache/base-image/debootstrap.log)"; }
            # Clear the apt caches (they are not needed inside the image).
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
            find "$BASE_DIR" -maxdepth 1 -name '*.tar' -delete
            tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
            mv "$tarball.tmp" "$tarball"
            rm -rf "$rootfs"
            how="debootstrap $BASE_SUITE --include=$BASE_INCLUDE"
        fi
        docker import --change "LABEL bench.base.key=$key" --change 'CMD ["/bin/bash"]' \
            "$tarball" "$BASE_IMAGE" >/dev/null
        say image "built $BASE_IMAGE: $how ($(elapsed "$t") s)"
    fi
}

# Once per (image, requirements): the venv's torch must load in the image's python.
step_image_py() {
    local stamp=$BASE_DIR/verified want
    want="$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null) $(sha256sum requirements.txt | cut -d' ' -f1)"
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        say image-py "venv torch in $BASE_IMAGE already verified"
        return
    fi
    if ((CHECK == 1)); then
        would image-py "check that the venv's torch loads in $BASE_IMAGE"
        return
    fi
    local out
    out=$(docker run --rm --net=host --label bench.test=infra-setup \
        -v "$REPO/.venv/lib/python3.11/site-packages:/opt/bench-site:ro" -e PYTHONPATH=/opt/bench-site \
        "$BASE_IMAGE" python3 -c 'import sys, torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, "python", sys.version.split()[0])' 2>&1) ||
        die "the venv's torch does not load in $BASE_IMAGE: $out"
    echo "$want" >"$stamp"
    say image-py "verified: ${out##*$'\n'}"
}

# --- what `make bench` needs ---------------------------------------------------
# Runs the step functions named at the same time, each in a subshell, and waits for
# all; fails naming those that failed (their own message came first). With --check
# one after another, in this shell (they only look, and `would` counts here).
side_by_side() {
    local step
    if ((CHECK == 1)); then
        for step in "$@"; do "$step"; done
        return
    fi
    local pids=() failed=() i
    for step in "$@"; do
        "$step" &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[i]}" || failed+=("${*:i+1:1}")
    done
    ((${#failed[@]} == 0)) || die "${failed[*]} failed (see above)"
}

engine_and_base_image() {
    step_dockerd
    step_base_image
}

setup_bench() { # extra package groups (tests/infra/setup.sh: tests), installed by the same apt-get
    step_packages bench "$@"
    # The venv (local wheels: unpacking about 5 GB, CPU and disk) beside the engine and
    # the base image (debootstrap: mostly downloads); each prints its own line and time.
    side_by_side step_venv engine_and_base_image
    step_image_py
}
