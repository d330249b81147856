// The net-tx-big sender of ci/bench-io.sh (/bin/tcp-send in the nested
// guest): connects to ADDR PORT and writes MIB MiB of zeros in 256 KiB
// write() calls, then shuts the connection down. Unlike busybox nc (which
// writes what one read of its stdin gives, a few KiB), each call hands the
// kernel a large buffer, as a bulk sender would. Built static at benchmark
// time. Usage: tcp-send ADDR PORT MIB; exit status 1 on any error.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static char buf[CHUNK];

static int fail(const char *what) {
    fprintf(stderr, "tcp-send: %s: %s\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    struct sockaddr_in addr = {.sin_family = AF_INET};
    char *end;
    if (argc != 4) {
        fprintf(stderr, "usage: tcp-send ADDR PORT MIB\n");
        return 1;
    }
    unsigned long port = strtoul(argv[2], &end, 10);
    if (*end || port == 0 || port > 65535 || inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "tcp-send: bad address %s %s\n", argv[1], argv[2]);
        return 1;
    }
    addr.sin_port = htons((unsigned short)port);
    unsigned long long mib = strtoull(argv[3], &end, 10);
    if (*end || !*argv[3]) {
        fprintf(stderr, "tcp-send: bad size %s\n", argv[3]);
        return 1;
    }

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("connect");
    unsigned long long left = mib * 1024 * 1024;
    while (left > 0) {
        size_t want = left < CHUNK ? (size_t)left : CHUNK;
        size_t off = 0;
        // A blocking socket may still take part of a large write (a signal).
        while (off < want) {
            ssize_t n = write(fd, buf + off, want - off);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return fail("write");
            off += (size_t)n;
        }
        left -= want;
    }
    // Half-close so the receiver sees EOF once all data is in; close reports
    // nothing of delivery, so this is the last error we can see.
    if (shutdown(fd, SHUT_WR) < 0) return fail("shutdown");
    if (close(fd) < 0) return fail("close");
    return 0;
}
