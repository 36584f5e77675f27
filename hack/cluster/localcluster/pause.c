/* The pod sandbox ("pause") process of the local cluster's real node: it holds the pod's
 * namespaces, sleeps, and reaps the zombies of the pod's shared PID namespace. Built statically
 * by images.py (gcc -static) into a one-file image; nothing is pulled. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not PID 1\n");
    }
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;) {
        pause();
    }
    return 0;
}
