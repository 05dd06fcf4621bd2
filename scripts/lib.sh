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

# free_port — print a TCP port nobody listens on at 127.0.0.1.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$(( (RANDOM % 20000) + 30000 ))
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
start_registry() {
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir/storage"
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
        sleep 0.05
    done
    echo "docker-registry did not start; its log:" >&2
    cat "$dir/registry.log" >&2
    return 2
}
