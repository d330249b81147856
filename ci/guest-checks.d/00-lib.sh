# Helpers for the virtio checks (ci/virtio-e2e.sh). /init sources every
# /checks.d/*.sh in order in tandem.mode=checks; the kernel argument
# tandem.checks=a,b,c picks the checks that run, the others do nothing.
# Each check prints exactly one line: CHECK <name> PASS|FAIL <detail>.

# The value of kernel argument $1 (tandem.NAME=VALUE), or nothing.
cmdline_value() {
    local word
    for word in $(cat /proc/cmdline); do
        case $word in "$1="*) echo "${word#*=}"; return ;; esac
    done
}

# True when check $1 was asked for.
check_wanted() {
    case ",$(cmdline_value tandem.checks)," in *",$1,"*) return 0 ;; esac
    return 1
}

check_result() { echo "CHECK $1 $2 $3"; }

# The sha256 of stdin.
sha_of_stdin() { sha256sum | cut -c1-64; }

# The last line a command left in /tmp/check.err (for FAIL details).
last_error() { tail -n 1 /tmp/check.err 2>/dev/null | tr -d '\r'; }
