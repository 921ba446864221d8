/* The node's sandbox ("pause") image: holds a Pod's namespaces, reaps orphaned children when it
 * is the Pod's PID 1, and exits 0 on SIGTERM or SIGINT. Built with gcc -static by hack/images.sh. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction sa = {0};
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = stop;
  if (sigaction(SIGTERM, &sa, 0) < 0 || sigaction(SIGINT, &sa, 0) < 0) return 1;
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGCHLD, &sa, 0) < 0) return 1;
  for (;;) pause();
}
