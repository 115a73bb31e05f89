/* Power-cut model, loaded with LD_PRELOAD into a process whose files under POWERCUT_DIR must survive
 * a power loss. See tests/e2e/powercut.py for how the log is replayed and for the model's limits.
 *
 * Every fsync or fdatasync of a file under POWERCUT_DIR copies what the file holds right then to
 * POWERCUT_SHADOW/f-N and logs "F N <inode> <path>": that copy is what the disk is known to hold.
 * An fsync of a directory there writes its listing (name, inode, type) to POWERCUT_SHADOW/d-N and logs
 * "D N <path>": those names are known to be on disk. Everything else (writes, renames, unlinks,
 * mkdirs not followed by an fsync) is left to the page cache, which a power cut drops. A file opened
 * with O_SYNC or O_DSYNC would make every write durable: the model does not cover it, so it aborts.
 * A syncfs records every file and folder under POWERCUT_DIR, as one fsync of each.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_open)(const char *, int, ...);
static unsigned long counter;

static const char *watched(int fd, char *path) {
    const char *dir = getenv("POWERCUT_DIR");
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX - 1);
    if (!dir || n <= 0) return NULL;
    path[n] = 0;
    size_t len = strlen(dir);
    if (strncmp(path, dir, len) != 0 || (path[len] != '/' && path[len] != 0)) return NULL;
    return path;
}

static void resolve(void) {
    if (!real_open) {
        real_fsync = dlsym(RTLD_NEXT, "fsync");
        real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
        real_open = dlsym(RTLD_NEXT, "open");
    }
}

static void log_line(const char *line) {
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/log", getenv("POWERCUT_SHADOW"));
    int fd = real_open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) abort();
    if (write(fd, line, strlen(line)) != (ssize_t)strlen(line)) abort();  /* O_APPEND: one line, whole */
    close(fd);
}

/* Record what `fd` holds now, as known durable. Called after the real fsync succeeded. */
static void record(int fd) {
    char path[PATH_MAX], shadow[PATH_MAX], line[PATH_MAX + 64];
    struct stat st;
    if (!watched(fd, path) || fstat(fd, &st) != 0) return;
    unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
    pid_t pid = getpid();
    if (S_ISDIR(st.st_mode)) {
        snprintf(shadow, sizeof shadow, "%s/d-%d-%lu", getenv("POWERCUT_SHADOW"), pid, n);
        FILE *out = fopen(shadow, "w");
        DIR *d = opendir(path);
        if (!out || !d) abort();
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                fprintf(out, "%s\t%lu\t%d\n", e->d_name, (unsigned long)e->d_ino, e->d_type == DT_DIR);
        }
        closedir(d);
        fclose(out);
        snprintf(line, sizeof line, "D %d-%lu %s\n", pid, n, path);
    } else if (S_ISREG(st.st_mode)) {
        snprintf(shadow, sizeof shadow, "%s/f-%d-%lu", getenv("POWERCUT_SHADOW"), pid, n);
        int in = real_open(path, O_RDONLY | O_CLOEXEC);
        int out = real_open(shadow, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (in < 0 || out < 0) abort();
        char buf[1 << 16];
        for (ssize_t got; (got = read(in, buf, sizeof buf)) != 0;) {
            if (got < 0 || write(out, buf, got) != got) abort();
        }
        close(in);
        close(out);
        snprintf(line, sizeof line, "F %d-%lu %lu %s\n", pid, n, (unsigned long)st.st_ino, path);
    } else {
        return;
    }
    log_line(line);
}

__attribute__((constructor)) static void init(void) { resolve(); }

int fsync(int fd) {
    resolve();
    int rc = real_fsync(fd);
    if (rc == 0) record(fd);
    return rc;
}

int fdatasync(int fd) {
    resolve();
    int rc = real_fdatasync(fd);
    if (rc == 0) record(fd);
    return rc;
}

static int (*real_syncfs)(int);

static int record_path(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)ftw;
    if (flag != FTW_F && flag != FTW_D) return 0;
    int fd = real_open(path, O_RDONLY | O_CLOEXEC | (flag == FTW_D ? O_DIRECTORY : 0));
    if (fd >= 0) {
        record(fd);
        close(fd);
    }
    return 0;
}

/* syncfs makes the whole file system durable: record every file and folder under POWERCUT_DIR. */
int syncfs(int fd) {
    resolve();
    if (!real_syncfs) real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    int rc = real_syncfs(fd);
    const char *dir = getenv("POWERCUT_DIR");
    if (rc == 0 && dir) nftw(dir, record_path, 32, FTW_PHYS);
    return rc;
}

static void check_flags(const char *path, int flags) {
    const char *dir = getenv("POWERCUT_DIR");
    if (dir && (flags & (O_SYNC | O_DSYNC)) && strncmp(path, dir, strlen(dir)) == 0) abort();
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    resolve();
    check_flags(path, flags);
    return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));
