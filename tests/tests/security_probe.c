/* The security suite's probe, built static by the suite (gcc) and bind-mounted into containers.
 *
 *   probe syscalls            tries the calls docker's seccomp profile refuses; one line each: NAME=ok|ERRNO
 *   probe key DESCRIPTION     looks for a "user" key in the session keyring: found ID | errno name
 *   probe syn IP PORT MAC     a TCP SYN to IP:PORT sent raw on eth0 to the gateway's MAC (as CVE-2020-8558
 *                             exploits do); prints "answered FLAGS" or "no answer" after 2 s
 *   probe scan STOPFILE       until STOPFILE exists: every other process's /proc/PID/exe and /proc/PID/fd/N;
 *                             prints "LEAK ..." for an exe that is not the image's busybox or an fd naming a file
 *                             outside /dev, then "scanned N opened-exe M"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc >= 0)
        printf("%s=ok\n", name);
    else
        printf("%s=%s\n", name, strerrorname_np(errno));
}

static int syscalls(void) {
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* @s */, 0));
    report("add_key", syscall(SYS_add_key, "user", "cm-probe", "x", 1, -3));
    report("request_key", syscall(SYS_request_key, "user", "cm-probe", NULL, 0));
    char attr[128] = {0};
    *(unsigned *)attr = 1;                 /* PERF_TYPE_SOFTWARE */
    *(unsigned *)(attr + 4) = sizeof attr; /* size */
    report("perf_event_open", syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 1 /* UFFD_USER_MODE_ONLY */));
    char params[120] = {0};
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, params));
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("getpid", syscall(SYS_getpid));
    return 0;
}

static int key(const char *description) {
    long id = syscall(SYS_keyctl, 10 /* KEYCTL_SEARCH */, -3 /* @s */, "user", description, 0);
    if (id >= 0)
        printf("found %ld\n", id);
    else
        printf("%s\n", strerrorname_np(errno));
    return 0;
}

static unsigned short checksum(const void *data, size_t len, unsigned long sum) {
    const unsigned short *p = data;
    for (; len > 1; len -= 2) sum += *p++;
    if (len) sum += *(const unsigned char *)p;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (unsigned short)~sum;
}

static int syn(const char *ip, int port, const char *mac) {
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    if (fd < 0) { perror("socket"); return 2; }
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "eth0");
    if (ioctl(fd, SIOCGIFINDEX, &ifr) < 0) { perror("SIOCGIFINDEX"); return 2; }
    int ifindex = ifr.ifr_ifindex;
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) { perror("SIOCGIFHWADDR"); return 2; }
    unsigned char own_mac[6];
    memcpy(own_mac, ifr.ifr_hwaddr.sa_data, 6);
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    if (ioctl(sock, SIOCGIFADDR, &ifr) < 0) { perror("SIOCGIFADDR"); return 2; }
    struct in_addr own = ((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr;
    unsigned char gw_mac[6];
    if (sscanf(mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &gw_mac[0], &gw_mac[1], &gw_mac[2], &gw_mac[3], &gw_mac[4],
               &gw_mac[5]) != 6) { fprintf(stderr, "bad mac %s\n", mac); return 2; }

    unsigned char frame[54] = {0};
    struct ether_header *eth = (void *)frame;
    memcpy(eth->ether_dhost, gw_mac, 6);
    memcpy(eth->ether_shost, own_mac, 6);
    eth->ether_type = htons(ETHERTYPE_IP);
    struct iphdr *iph = (void *)(frame + 14);
    iph->version = 4;
    iph->ihl = 5;
    iph->tot_len = htons(40);
    iph->id = htons(4242);
    iph->ttl = 64;
    iph->protocol = IPPROTO_TCP;
    iph->saddr = own.s_addr;
    iph->daddr = inet_addr(ip);
    iph->check = checksum(iph, 20, 0);
    struct tcphdr *tcp = (void *)(frame + 34);
    unsigned short sport = 40000 + (getpid() % 20000);
    tcp->source = htons(sport);
    tcp->dest = htons(port);
    tcp->seq = htonl(12345);
    tcp->doff = 5;
    tcp->syn = 1;
    tcp->window = htons(1024);
    struct { unsigned int s, d; unsigned char z, p; unsigned short len; } pseudo = {
        iph->saddr, iph->daddr, 0, IPPROTO_TCP, htons(20)};
    unsigned long sum = 0;
    const unsigned short *w = (const void *)&pseudo;
    for (size_t i = 0; i < sizeof pseudo / 2; i++) sum += w[i];
    tcp->check = checksum(tcp, 20, sum);

    struct sockaddr_ll to = {0};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    memcpy(to.sll_addr, gw_mac, 6);
    if (sendto(fd, frame, sizeof frame, 0, (struct sockaddr *)&to, sizeof to) < 0) { perror("sendto"); return 2; }

    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = 2000 - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left <= 0) break;
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, (int)left) <= 0) continue;
        unsigned char buf[2048];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 34 + 20) continue;
        struct iphdr *r = (void *)(buf + 14);
        if (r->protocol != IPPROTO_TCP || r->saddr != iph->daddr) continue;
        struct tcphdr *t = (void *)(buf + 14 + r->ihl * 4);
        if (ntohs(t->source) != port || ntohs(t->dest) != sport) continue;
        printf("answered %s%s\n", t->syn ? "SYN" : "", t->ack ? (t->rst ? "RST-ACK" : "ACK") : (t->rst ? "RST" : ""));
        return 0;
    }
    printf("no answer\n");
    return 0;
}

static int scan(const char *stopfile) {
    struct stat busybox;
    if (stat("/bin/busybox", &busybox) < 0) { perror("/bin/busybox"); return 2; }
    pid_t self = getpid();
    long rounds = 0, opened = 0;
    char path[300], target[4096];
    while (access(stopfile, F_OK) != 0) {
        rounds++;
        DIR *proc = opendir("/proc");
        struct dirent *e;
        while ((e = readdir(proc))) {
            int pid = atoi(e->d_name);
            if (pid <= 0 || pid == self) continue;
            snprintf(path, sizeof path, "/proc/%d/exe", pid);
            int exe = open(path, O_RDONLY | O_CLOEXEC);
            if (exe >= 0) {
                opened++;
                struct stat st;
                if (fstat(exe, &st) == 0 && (st.st_dev != busybox.st_dev || st.st_ino != busybox.st_ino)) {
                    ssize_t n = readlink(path, target, sizeof target - 1);
                    target[n > 0 ? n : 0] = 0;
                    printf("LEAK exe of %d: %s\n", pid, target);
                    fflush(stdout);
                }
                close(exe);
            }
            snprintf(path, sizeof path, "/proc/%d/fd", pid);
            DIR *fds = opendir(path);
            if (!fds) continue;
            struct dirent *f;
            while ((f = readdir(fds))) {
                if (f->d_name[0] == '.') continue;
                char link[600];
                snprintf(link, sizeof link, "/proc/%d/fd/%s", pid, f->d_name);
                ssize_t n = readlink(link, target, sizeof target - 1);
                if (n <= 0) continue;
                target[n] = 0;
                if (target[0] == '/' && strncmp(target, "/dev/", 5) != 0) {
                    printf("LEAK fd %s of %d: %s\n", f->d_name, pid, target);
                    fflush(stdout);
                }
            }
            closedir(fds);
        }
        closedir(proc);
    }
    printf("scanned %ld opened-exe %ld\n", rounds, opened);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "syscalls")) return syscalls();
    if (argc >= 3 && !strcmp(argv[1], "key")) return key(argv[2]);
    if (argc >= 5 && !strcmp(argv[1], "syn")) return syn(argv[2], atoi(argv[3]), argv[4]);
    if (argc >= 3 && !strcmp(argv[1], "scan")) return scan(argv[2]);
    fprintf(stderr, "usage: probe syscalls | key DESC | syn IP PORT MAC | scan STOPFILE\n");
    return 2;
}
