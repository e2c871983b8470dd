#!/usr/bin/env bash
# Brings up everything the end-to-end tests need on this machine: system
# packages, the venv, a Docker engine, the local base image, two SSH test
# hosts (separate sshd on 127.0.0.2:2222 and 127.0.0.3:2222) and a single-machine
# Slurm cluster (tests/infra/slurm.sh: nodes n1, n2 in partition bench).
#
# Idempotent: every step checks first and says what it did. Run from anywhere:
#   bash tests/infra/setup.sh
# 127.0.0.9:2222 is deliberately left unused: tests use it as the unreachable host.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO=$PWD
CACHE=$REPO/.cache
TESTHOSTS=$CACHE/testhosts
BASE_DIR=$CACHE/base-image

BASE_IMAGE=bench-base/debian:bookworm
BASE_SUITE=bookworm
BASE_MIRROR=http://deb.debian.org/debian
BASE_INCLUDE=python3,procps
NODE_NAMES=(node1 node2)
NODE_ADDRS=(127.0.0.2 127.0.0.3)
SSH_PORT=2222

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
T0=$EPOCHREALTIME

say() { printf 'setup: %-10s %s\n' "$1" "$2"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

mkdir -p "$CACHE"
# Several people share this tree: a second concurrent run waits instead of racing.
exec 9>"$CACHE/setup.lock"
flock 9

# --- system packages -------------------------------------------------------
step_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    # The campaign summary is opened in headless Chromium; its Chinese labels need a CJK font.
    command -v chromium >/dev/null || missing+=(chromium)
    [[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] || missing+=(fonts-wqy-microhei)
    # The Slurm backend's tests run on a real cluster (tests/infra/slurm.sh).
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    # Debian ships ensurepip (which venv needs) separately, in python3-venv.
    if [[ ! -x .venv/bin/python ]] && ! python3 -c 'import ensurepip' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]} == 0)); then
        say packages "already installed (dockerd, sshd, debootstrap, chromium, CJK font, slurm, munge)"
        return
    fi
    local t=$EPOCHREALTIME
    export DEBIAN_FRONTEND=noninteractive
    local log=$CACHE/apt.log
    { apt-get update -q && apt-get install -y -q "${missing[@]}"; } >"$log" 2>&1 ||
        { tail -n 20 "$log" >&2; die "apt-get install ${missing[*]} failed (log: .cache/apt.log)"; }
    say packages "installed ${missing[*]} ($(elapsed "$t") s)"
}

# --- venv ------------------------------------------------------------------
step_venv() {
    local created=""
    if [[ ! -x .venv/bin/python ]]; then
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
    local t=$EPOCHREALTIME
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
        command -v "$c" >/dev/null && "$c" info >/dev/null 2>&1 && return 0
    done
    return 1
}

step_dockerd() {
    if daemon_up; then
        say dockerd "already running"
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
    command -v docker >/dev/null || die "no docker on PATH"
    docker version >/dev/null 2>&1 || die "plain \`docker\` ($(command -v docker)) cannot talk to the daemon"
}

# --- a second Docker engine ----------------------------------------------------
# Test host node2 can be pointed at it (docker_host) to play a machine with its
# own image store: the harness must then copy the image there (docker save/load).
ENGINE2_DIR=/run/bench-engine2
ENGINE2_SOCK=unix://$ENGINE2_DIR/docker.sock
engine2_up() { DOCKER_HOST=$ENGINE2_SOCK docker info >/dev/null 2>&1; }

step_engine2() {
    if engine2_up; then
        say engine2 "already running ($ENGINE2_SOCK)"
        return
    fi
    local t=$EPOCHREALTIME
    mkdir -p "$ENGINE2_DIR" /var/lib/bench-engine2
    setsid -f dockerd --host "$ENGINE2_SOCK" --data-root /var/lib/bench-engine2 \
        --exec-root "$ENGINE2_DIR/exec" --pidfile "$ENGINE2_DIR/docker.pid" \
        --bridge=none --iptables=false --ip6tables=false \
        >>"$CACHE/engine2.log" 2>&1 </dev/null 9>&-
    local deadline=$((SECONDS + 60))
    until engine2_up; do
        ((SECONDS < deadline)) || { tail -n 20 "$CACHE/engine2.log" >&2; die "second dockerd did not answer (log: .cache/engine2.log)"; }
        sleep 0.5
    done
    say engine2 "started $ENGINE2_SOCK ($(elapsed "$t") s)"
}

# --- base image --------------------------------------------------------------
step_base_image() {
    # The key names the debootstrap inputs: change --include and the tarball is rebuilt.
    local key tarball have
    mkdir -p "$BASE_DIR"
    key=$(printf '%s\n' "$BASE_SUITE" minbase "$BASE_INCLUDE" "$BASE_MIRROR" | sha256sum | cut -c1-16)
    tarball=$BASE_DIR/$BASE_SUITE-minbase-$key.tar
    have=$(docker image inspect --format '{{index .Config.Labels "bench.base.key"}}' "$BASE_IMAGE" 2>/dev/null || true)
    if [[ $have == "$key" ]]; then
        say image "$BASE_IMAGE present"
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

    # Once per (image, requirements): the venv's torch must load in the image's python.
    local stamp=$BASE_DIR/verified want
    want="$(docker image inspect --format '{{.Id}}' "$BASE_IMAGE") $(sha256sum requirements.txt | cut -d' ' -f1)"
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        say image-py "venv torch in $BASE_IMAGE already verified"
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

# --- SSH test hosts ----------------------------------------------------------
# Prints the pid of node $1's sshd if it is ours and alive (pidfile + cmdline).
sshd_pid() {
    local dir=$TESTHOSTS/$1 pid
    [[ -f $dir/sshd.pid ]] || return 1
    pid=$(<"$dir/sshd.pid")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/sshd_config" || return 1
    echo "$pid"
}

write_sshd_config() { # name addr -> prints the config
    local dir=$TESTHOSTS/$1
    cat <<EOF
# Generated by tests/infra/setup.sh: SSH test host $1.
ListenAddress $2:$SSH_PORT
HostKey "$dir/ssh_host_ed25519_key"
PidFile "$dir/sshd.pid"
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile "$TESTHOSTS/id_ed25519.pub"
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
X11Forwarding no
# Drop sessions whose client vanished (about a minute).
ClientAliveInterval 15
ClientAliveCountMax 4
# Tests open many connections and channels at once.
MaxStartups 64:30:128
MaxSessions 64
Subsystem sftp internal-sftp
# Every session runs root's ~/.bashrc, which on these machines does `pyenv init`
# (a rehash under a lock file). A session killed mid-rehash (the fault tests kill
# sessions) leaves the lock, and every later login would wait 60 s for it.
SetEnv PYENV_REHASH_TIMEOUT=0
EOF
}

step_ssh_hosts() {
    mkdir -p "$TESTHOSTS" /run/sshd
    if [[ ! -f $TESTHOSTS/id_ed25519 ]]; then
        ssh-keygen -q -t ed25519 -N '' -C bench-tests-client -f "$TESTHOSTS/id_ed25519"
        say ssh-keys "generated client key .cache/testhosts/id_ed25519"
    fi

    local i name addr dir config pid known=""
    for i in "${!NODE_NAMES[@]}"; do
        name=${NODE_NAMES[i]} addr=${NODE_ADDRS[i]} dir=$TESTHOSTS/${NODE_NAMES[i]}
        mkdir -p "$dir"
        if [[ ! -f $dir/ssh_host_ed25519_key ]]; then
            ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/ssh_host_ed25519_key"
        fi
        known+="[$addr]:$SSH_PORT $(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")"$'\n'

        config=$(write_sshd_config "$name" "$addr")
        local changed=0
        if [[ ! -f $dir/sshd_config || $(<"$dir/sshd_config") != "$config" ]]; then
            printf '%s\n' "$config" >"$dir/sshd_config"
            changed=1
        fi

        local verb=started
        if pid=$(sshd_pid "$name"); then
            if ((changed == 0)) && port_open "$addr" "$SSH_PORT"; then
                say "$name" "sshd already running on $addr:$SSH_PORT (pid $pid)"
                continue
            fi
            kill "$pid"
            for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            verb="restarted (config changed or port dead)"
        fi
        port_open "$addr" "$SSH_PORT" &&
            die "$addr:$SSH_PORT is taken by another process (another checkout's test host?)"
        /usr/sbin/sshd -t -f "$dir/sshd_config" || die "bad sshd config $dir/sshd_config"
        /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log" 9>&-
        for _ in {1..50}; do port_open "$addr" "$SSH_PORT" && break; sleep 0.1; done
        pid=$(sshd_pid "$name") && port_open "$addr" "$SSH_PORT" ||
            die "sshd for $name did not come up (log: .cache/testhosts/$name/sshd.log)"
        say "$name" "sshd $verb on $addr:$SSH_PORT (pid $pid)"
    done

    if [[ ! -f $TESTHOSTS/known_hosts || $(<"$TESTHOSTS/known_hosts")$'\n' != "$known" ]]; then
        printf '%s' "$known" >"$TESTHOSTS/known_hosts"
        say ssh-keys "wrote .cache/testhosts/known_hosts"
    fi

    # Log in the way the harness will: key only, host key checked against known_hosts.
    local out
    for i in "${!NODE_NAMES[@]}"; do
        name=${NODE_NAMES[i]} addr=${NODE_ADDRS[i]}
        out=$(ssh -F /dev/null -i "$TESTHOSTS/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o UserKnownHostsFile="$TESTHOSTS/known_hosts" -o GlobalKnownHostsFile=/dev/null \
            -o StrictHostKeyChecking=yes -o ConnectTimeout=5 -p "$SSH_PORT" "root@$addr" \
            'command -v docker && command -v python3 && docker version --format "{{.Server.Version}}"' 2>&1) ||
            die "ssh root@$addr:$SSH_PORT (docker + python3 check) failed: ${out//$'\n'/ }"
        say "$name" "ssh ok: ${out//$'\n'/, }"
    done
}

# --- Slurm cluster -----------------------------------------------------------
# Machine-wide, shared by every checkout; teardown.sh leaves it running.
step_slurm() {
    bash tests/infra/slurm.sh start
}

step_packages
step_venv
step_dockerd
step_base_image
# scripts/setup.sh (what `make bench` needs) stops here.
if [[ ${1:-} != --no-test-hosts ]]; then
    step_engine2
    step_ssh_hosts
    step_slurm
fi
say done "in $(elapsed "$T0") s"
