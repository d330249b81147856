# shellcheck shell=dash
# Helpers for the virtio checks (ci/virtio-e2e.sh). /init sources every
# /checks.d/*.sh in order in tandem.mode=checks; the kernel argument
# tandem.checks=a,b,c picks the checks that run, the others do nothing.
# Each check prints exactly one line: CHECK <name> PASS|FAIL <detail>.

# The value of kernel argument $1 (tandem.NAME=VALUE), or nothing.
cmdline_value() {
    local cmdline word
    read -r cmdline </proc/cmdline
    for word in $cmdline; do
        case $word in "$1="*) echo "${word#*=}"; return ;; esac
    done
}

# True when check $1 was asked for.
check_wanted() {
    case ",$(cmdline_value tandem.checks)," in *",$1,"*) return 0 ;; esac
    return 1
}

# Prints the result line of check $1 (PASS|FAIL, a detail, the uptime).
check_result() {
    local uptime
    read -r uptime _ </proc/uptime
    echo "CHECK $1 $2 $3 [uptime $uptime]"
}

# The sha256 of stdin.
sha_of_stdin() { sha256sum | cut -c1-64; }

# The last error line a command left in /tmp/check.err (for FAIL
# details), without dd's record counts.
last_error() { grep -vE 'records (in|out)' /tmp/check.err 2>/dev/null | tail -n 1; }
