/* The `dlopen` escape route of escape_routes.js: a shared library whose constructor
 * connects to 127.0.0.1:$PUSHNET_ESCAPE_PORT when it is loaded (process.dlopen then fails
 * harmlessly: it is no Node addon). The outcome goes in PUSHNET_ESCAPE_RESULT:
 * "connected", or the errno's name/number. Built by crates/sidecar/tests/sandbox_escape.rs
 * with `cc -shared -fPIC`. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

__attribute__((constructor)) static void escape_connect(void) {
    const char *port = getenv("PUSHNET_ESCAPE_PORT");
    if (port == NULL) return;
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char result[64];
    if (fd < 0) {
        snprintf(result, sizeof result, "socket errno %d", errno);
    } else if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
        snprintf(result, sizeof result, "connected");
    } else {
        snprintf(result, sizeof result, "connect errno %d (%s)", errno, strerror(errno));
    }
    if (fd >= 0) close(fd);
    setenv("PUSHNET_ESCAPE_RESULT", result, 1);
}
