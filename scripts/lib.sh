# Shared by scripts/*: install missing Debian packages (when root) and pick a build cache.

# ensure_packages CMD:PACKAGE ... — install the packages whose command is missing.
ensure_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 2
    fi
    echo "installing ${missing[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

LOCKSTEP_PACKAGES=(docker-registry:docker-registry htpasswd:apache2-utils ssh-keygen:openssh-client
    /usr/sbin/sshd:openssh-server openssl:openssl git:git curl:curl jq:jq ss:iproute2)

# ensure_go — put a Go toolchain new enough for tests/cluster (go 1.26) first on PATH: the
# installed `go` when it is, else the official toolchain from the Go module proxy (the zip
# `go` itself would fetch with GOTOOLCHAIN), checked against a pinned sha256 and unpacked
# once into the cache. Debian's golang package is too old.
LOCKSTEP_GO_VERSION=1.26.8
LOCKSTEP_GO_MIN_MINOR=26
declare -A LOCKSTEP_GO_SHA256=(
    [amd64]=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
)
ensure_go() {
    local have
    have=$(go env GOVERSION 2>/dev/null || true)
    if [[ $have =~ ^go1\.([0-9]+) ]] && (( BASH_REMATCH[1] >= LOCKSTEP_GO_MIN_MINOR )); then
        return 0
    fi
    local arch dir zip proxy sum
    arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
    [[ $arch == x86_64 ]] && arch=amd64
    sum=${LOCKSTEP_GO_SHA256[$arch]:-}
    dir="${XDG_CACHE_HOME:-$HOME/.cache}/lockstep/go$LOCKSTEP_GO_VERSION"
    if [[ ! -x $dir/bin/go ]]; then
        if [[ -z $sum ]]; then
            echo "Go >= 1.$LOCKSTEP_GO_MIN_MINOR is needed (found: ${have:-none}); no pinned toolchain for $arch: install one" >&2
            exit 2
        fi
        ensure_packages curl:curl unzip:unzip
        proxy=${GOPROXY:-https://proxy.golang.org}
        proxy=${proxy%%[,|]*}
        if [[ $proxy == off ]]; then
            echo "Go >= 1.$LOCKSTEP_GO_MIN_MINOR is needed (found: ${have:-none}) and GOPROXY=off forbids fetching it" >&2
            exit 2
        fi
        [[ $proxy == direct ]] && proxy=https://proxy.golang.org
        zip=$(mktemp)
        echo "fetching go$LOCKSTEP_GO_VERSION from $proxy (found: ${have:-no go}) ..." >&2
        curl -sSfL -o "$zip" \
            "$proxy/golang.org/toolchain/@v/v0.0.1-go$LOCKSTEP_GO_VERSION.linux-$arch.zip"
        if [[ $(sha256sum "$zip" | cut -d' ' -f1) != "$sum" ]]; then
            rm -f "$zip"
            echo "the Go toolchain download does not match its pinned sha256" >&2
            exit 2
        fi
        local unpacked
        mkdir -p "$(dirname "$dir")"
        unpacked=$(mktemp -d "$dir.XXXXXX")
        unzip -q "$zip" -d "$unpacked"
        rm -f "$zip"
        rm -rf "$dir"
        mv "$unpacked/golang.org/toolchain@v0.0.1-go$LOCKSTEP_GO_VERSION.linux-$arch" "$dir"
        rm -rf "$unpacked"
        chmod +x "$dir/bin/"* "$dir/pkg/tool/"*/* 2>/dev/null || true
    fi
    export PATH="$dir/bin:$PATH"
}

# free_port — print a TCP port nobody listens on at 127.0.0.1, below the kernel's ephemeral
# range (outgoing connections take their local ports from it, and a port taken that way
# cannot be bound though nothing listens on it).
free_port() {
    local port lo=10000 hi
    hi=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    (( hi > lo + 1000 )) || hi=32768
    for _ in $(seq 1 200); do
        port=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo) ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 2
}

# start_registry DIR — run Debian's docker-registry on a free loopback port with storage in
# DIR; sets REGISTRY_HOST and REGISTRY_PID. The caller stops it (kill "$REGISTRY_PID").
# A port nobody listens on may still be bound (an outgoing connection's local port): a bind
# that fails that way is retried on another port.
start_registry() {
    local dir=$1 port attempt
    mkdir -p "$dir/storage"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
        GOGC=400 docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
        REGISTRY_PID=$!
        REGISTRY_HOST=127.0.0.1:$port
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                return 0
            fi
            if ! kill -0 "$REGISTRY_PID" 2>/dev/null; then
                break
            fi
            sleep 0.05
        done
        if ! grep -q "address already in use" "$dir/registry.log"; then
            break
        fi
        echo "port $port was taken (attempt $attempt); trying another" >&2
    done
    echo "docker-registry did not start; its log:" >&2
    cat "$dir/registry.log" >&2
    return 2
}
