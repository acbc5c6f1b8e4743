/*
 * The floor of any proxy on this machine: a single-threaded epoll byte
 * pipe. Each client connection gets its own server connection (Unix
 * sockets, taken in turn from the list given) and bytes go across as
 * they come: no parsing, no pooling, no routing. A pooler can only be
 * slower; bench/proxy.sh runs it as the `pipe` target (to the replicas,
 * where pgkeel sends reads, for the select cases; to the primary for
 * TPC-B).
 *
 *   pipe PORT SOCKET [SOCKET ...]      (listens on 127.0.0.1:PORT)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAXFD 65536

static int peer[MAXFD];
static char buf[65536];

static void close_pair(int fd) {
  int p = peer[fd];
  close(fd);
  peer[fd] = -1;
  if (p >= 0) {
    close(p);
    peer[p] = -1;
  }
}

/* Sends all of buf[0..n) to fd (blocking socket); -1 on error. */
static int send_all(int fd, const char *b, ssize_t n) {
  while (n > 0) {
    ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += w;
    n -= w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s PORT SOCKET [SOCKET ...]\n", argv[0]);
    return 2;
  }
  /* A background job of a script starts with SIGINT ignored. */
  signal(SIGINT, SIG_DFL);
  int port = atoi(argv[1]), nsock = argc - 2, next = 0, one = 1;
  for (int i = 0; i < MAXFD; i++) peer[i] = -1;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
    perror("pipe: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno != EINTR) {
      perror("pipe: epoll_wait");
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) continue;
        if (c >= MAXFD) {
          close(c);
          continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un u = {0};
        u.sun_family = AF_UNIX;
        strncpy(u.sun_path, argv[2 + (next++ % nsock)], sizeof u.sun_path - 1);
        if (s < 0 || s >= MAXFD || connect(s, (struct sockaddr *)&u, sizeof u)) {
          perror("pipe: connect to server");
          close(c);
          if (s >= 0) close(s);
          continue;
        }
        peer[c] = s;
        peer[s] = c;
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        ev.data.fd = s;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
        continue;
      }
      if (peer[fd] < 0) continue;
      /* Non-blocking: an event of this batch may be for a descriptor
       * closed and reused (by an accept) earlier in the batch. */
      ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r <= 0 || send_all(peer[fd], buf, r) < 0) close_pair(fd);
    }
  }
}
