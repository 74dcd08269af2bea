// Power-cut simulation, the recording half (issue 24 item 1): an LD_PRELOAD shim that appends to
// a journal every change a process makes to the files under one directory, and every flush, so
// that powercut.py can rebuild the directory a power cut at any point would have left.
//
//   PCUT_JOURNAL=<file>  the journal (appended to; several processes in turn may share it)
//   PCUT_ROOT=<dir>      absolute: only paths under it are recorded
//   PCUT_MARK_STDOUT=1   also record what the process writes to fd 1 (acknowledgement markers:
//                        `commcare submit` prints one JSON line per answered form)
//
// Recorded: open (with O_CREAT/O_TRUNC, and whether it created the file), write, pwrite(64),
// writev, pwritev(64, 2), ftruncate(64), fallocate (hole punches and size extensions), rename,
// renameat(2), unlink(at), mkdir(at), rmdir, link(at), dup, close, fsync/fdatasync/sync_file_range
// (as a begin and an end record: a flush makes durable what was written before it began), and
// fopen (libstdc++'s ofstream opens through it and then calls write(2)). A writable shared mmap
// of a recorded file is noted (MMAP record): writes through it are not seen. Writes that glibc
// makes internally (fwrite's buffer flushes) are not seen either.
//
// Each record: struct header (see powercut.py: "<IBBHiiqqII") + path bytes + data bytes, written
// with one write(2) to an O_APPEND descriptor under a mutex.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
  OP_OPEN = 1,
  OP_WRITE = 2,
  OP_TRUNC = 3,
  OP_PUNCH = 4,
  OP_SYNC_BEGIN = 5,
  OP_SYNC_END = 6,
  OP_RENAME = 7,
  OP_UNLINK = 8,
  OP_MKDIR = 9,
  OP_RMDIR = 10,
  OP_LINK = 11,
  OP_CLOSE = 12,
  OP_MARK = 13,
  OP_MMAP = 14,
  OP_EXTEND = 15,
  OP_DUP = 16
};
#define FLAG_ZERO 1

#pragma pack(push, 1)
struct rec {
  uint32_t magic;
  uint8_t op, flags;
  uint16_t pad;
  int32_t pid, fd;
  int64_t a, b;
  uint32_t plen, dlen;
};
#pragma pack(pop)

#define MAXFD 65536
static char tracked[MAXFD];
static int jfd = -1;
static int mark_stdout;
static char root[PATH_MAX];
static size_t root_len;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t sync_token;

#define REAL(ret, name, ...)              \
  static ret (*real_##name)(__VA_ARGS__); \
  if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name);

__attribute__((constructor)) static void init(void) {
  const char* j = getenv("PCUT_JOURNAL");
  const char* r = getenv("PCUT_ROOT");
  if (!j || !r) return;
  jfd = (int)syscall(SYS_openat, AT_FDCWD, j, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  snprintf(root, sizeof root, "%s", r);
  root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = 0;
  mark_stdout = getenv("PCUT_MARK_STDOUT") && atoi(getenv("PCUT_MARK_STDOUT"));
}

static void emit(int op, int flags, int fd, int64_t a, int64_t b, const char* path,
                 const void* data, size_t dlen) {
  if (jfd < 0) return;
  struct rec h = {0x43435043u,
                  (uint8_t)op,
                  (uint8_t)flags,
                  0,
                  (int32_t)getpid(),
                  fd,
                  a,
                  b,
                  path ? (uint32_t)strlen(path) : 0,
                  (uint32_t)dlen};
  size_t total = sizeof h + h.plen + dlen;
  char stackbuf[4096];
  char* buf = total <= sizeof stackbuf ? stackbuf : malloc(total);
  if (!buf) abort();
  memcpy(buf, &h, sizeof h);
  if (h.plen) memcpy(buf + sizeof h, path, h.plen);
  if (dlen) memcpy(buf + sizeof h + h.plen, data, dlen);
  pthread_mutex_lock(&mu);
  size_t done = 0;
  while (done < total) {
    ssize_t n = syscall(SYS_write, jfd, buf + done, total - done);
    if (n <= 0) abort();  // a journal with a hole would make every replay wrong
    done += (size_t)n;
  }
  pthread_mutex_unlock(&mu);
  if (buf != stackbuf) free(buf);
}

// The absolute form of (dirfd, path) in out; returns whether it lies under PCUT_ROOT.
static int resolve(int dirfd, const char* path, char* out) {
  if (jfd < 0 || !path) return 0;
  if (path[0] == '/') {
    snprintf(out, PATH_MAX, "%s", path);
  } else {
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
      if (!getcwd(base, sizeof base)) return 0;
    } else {
      char link[64];
      snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
      ssize_t n = readlink(link, base, sizeof base - 1);
      if (n <= 0) return 0;
      base[n] = 0;
    }
    if (snprintf(out, PATH_MAX, "%s/%s", base, path) >= PATH_MAX) return 0;
  }
  return strncmp(out, root, root_len) == 0 && (out[root_len] == '/' || out[root_len] == 0);
}

static int is_tracked(int fd) { return jfd >= 0 && fd >= 0 && fd < MAXFD && tracked[fd]; }

static int all_zero(const void* p, size_t n) {
  const unsigned char* c = p;
  for (size_t i = 0; i < n; ++i)
    if (c[i]) return 0;
  return 1;
}

static void emit_write(int fd, int64_t off, const void* data, size_t n) {
  if (all_zero(data, n))
    emit(OP_WRITE, FLAG_ZERO, fd, off, (int64_t)n, NULL, NULL, 0);
  else
    emit(OP_WRITE, 0, fd, off, (int64_t)n, NULL, data, n);
}

static void emit_iov(int fd, int64_t off, const struct iovec* iov, int cnt, ssize_t n) {
  for (int i = 0; i < cnt && n > 0; ++i) {
    size_t take = iov[i].iov_len < (size_t)n ? iov[i].iov_len : (size_t)n;
    if (take) emit_write(fd, off, iov[i].iov_base, take);
    off += (int64_t)take;
    n -= (ssize_t)take;
  }
}

static int after_open(int dirfd, const char* path, int flags, int fd, int existed) {
  char abs[PATH_MAX];
  if (fd < 0 || !resolve(dirfd, path, abs)) return fd;
  if (fd < MAXFD) tracked[fd] = 1;
  emit(OP_OPEN, 0, fd, flags, !existed && (flags & O_CREAT), abs, NULL, 0);
  return fd;
}

static int existed_at(int dirfd, const char* path) {
  struct stat st;
  return fstatat(dirfd, path, &st, 0) == 0;
}

#define OPEN_BODY(realname, dirfd, ...)                                      \
  mode_t mode = 0;                                                           \
  if (flags & (O_CREAT | O_TMPFILE)) {                                       \
    va_list ap;                                                              \
    va_start(ap, flags);                                                     \
    mode = va_arg(ap, mode_t);                                               \
    va_end(ap);                                                              \
  }                                                                          \
  int existed = jfd >= 0 && (flags & O_CREAT) ? existed_at(dirfd, path) : 1; \
  int fd = real_##realname(__VA_ARGS__, flags, mode);                        \
  return after_open(dirfd, path, flags, fd, existed);

int open(const char* path, int flags, ...) {
  REAL(int, open, const char*, int, ...);
  OPEN_BODY(open, AT_FDCWD, path)
}
int open64(const char* path, int flags, ...) {
  REAL(int, open64, const char*, int, ...);
  OPEN_BODY(open64, AT_FDCWD, path)
}
int openat(int dirfd, const char* path, int flags, ...) {
  REAL(int, openat, int, const char*, int, ...);
  OPEN_BODY(openat, dirfd, dirfd, path)
}
int openat64(int dirfd, const char* path, int flags, ...) {
  REAL(int, openat64, int, const char*, int, ...);
  OPEN_BODY(openat64, dirfd, dirfd, path)
}
int creat(const char* path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char* path, mode_t mode) {
  return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

static FILE* after_fopen(const char* path, const char* m, FILE* f, int existed) {
  if (!f) return f;
  int flags = 0;
  if (m[0] == 'w') flags = O_CREAT | O_TRUNC | O_WRONLY;
  if (m[0] == 'a') flags = O_CREAT | O_APPEND | O_WRONLY;
  if (strchr(m, '+')) flags = (flags & ~O_WRONLY) | O_RDWR;
  after_open(AT_FDCWD, path, flags, fileno(f), existed || !(flags & O_CREAT));
  return f;
}
FILE* fopen(const char* path, const char* m) {
  REAL(FILE*, fopen, const char*, const char*);
  int existed = jfd >= 0 ? existed_at(AT_FDCWD, path) : 1;
  return after_fopen(path, m, real_fopen(path, m), existed);
}
FILE* fopen64(const char* path, const char* m) {
  REAL(FILE*, fopen64, const char*, const char*);
  int existed = jfd >= 0 ? existed_at(AT_FDCWD, path) : 1;
  return after_fopen(path, m, real_fopen64(path, m), existed);
}
int fclose(FILE* f) {
  REAL(int, fclose, FILE*);
  int fd = f ? fileno(f) : -1;
  int r = real_fclose(f);
  if (is_tracked(fd)) {
    tracked[fd] = 0;
    emit(OP_CLOSE, 0, fd, 0, 0, NULL, NULL, 0);
  }
  return r;
}

int close(int fd) {
  REAL(int, close, int);
  int was = is_tracked(fd);
  int r = real_close(fd);
  if (was) {
    tracked[fd] = 0;
    emit(OP_CLOSE, 0, fd, 0, 0, NULL, NULL, 0);
  }
  return r;
}

static int after_dup(int old, int fd) {
  if (fd >= 0 && is_tracked(old) && fd < MAXFD) {
    tracked[fd] = 1;
    emit(OP_DUP, 0, old, fd, 0, NULL, NULL, 0);
  }
  return fd;
}
int dup(int old) {
  REAL(int, dup, int);
  return after_dup(old, real_dup(old));
}
int dup2(int old, int fd) {
  REAL(int, dup2, int, int);
  if (is_tracked(fd) && fd != old) {
    tracked[fd] = 0;
    emit(OP_CLOSE, 0, fd, 0, 0, NULL, NULL, 0);
  }
  return after_dup(old, real_dup2(old, fd));
}
int dup3(int old, int fd, int flags) {
  REAL(int, dup3, int, int, int);
  if (is_tracked(fd) && fd != old) {
    tracked[fd] = 0;
    emit(OP_CLOSE, 0, fd, 0, 0, NULL, NULL, 0);
  }
  return after_dup(old, real_dup3(old, fd, flags));
}

ssize_t write(int fd, const void* buf, size_t n) {
  REAL(ssize_t, write, int, const void*, size_t);
  ssize_t r = real_write(fd, buf, n);
  if (r > 0 && is_tracked(fd)) {
    off_t end = lseek(fd, 0, SEEK_CUR);
    emit_write(fd, end - r, buf, (size_t)r);
  } else if (r > 0 && fd == 1 && mark_stdout) {
    emit(OP_MARK, 0, fd, 0, r, NULL, buf, (size_t)r);
  }
  return r;
}
// std::cout goes through stdio, whose writes glibc makes internally (not interposable); std::endl
// ends in fflush(stdout), so what stdout's buffer holds is recorded just before it is written
// (`commcare submit` prints each answer with std::endl once the form is durable).
int fflush(FILE* f) {
  REAL(int, fflush, FILE*);
  if (mark_stdout && jfd >= 0 && (f == stdout || f == NULL) &&
      stdout->_IO_write_ptr > stdout->_IO_write_base)
    emit(OP_MARK, 0, 1, 0, 0, NULL, stdout->_IO_write_base,
         (size_t)(stdout->_IO_write_ptr - stdout->_IO_write_base));
  return real_fflush(f);
}

ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  REAL(ssize_t, writev, int, const struct iovec*, int);
  ssize_t r = real_writev(fd, iov, cnt);
  if (r > 0 && is_tracked(fd)) emit_iov(fd, lseek(fd, 0, SEEK_CUR) - r, iov, cnt, r);
  return r;
}
#define PWRITE(name, offt)                                                     \
  ssize_t name(int fd, const void* buf, size_t n, offt off) {                  \
    REAL(ssize_t, name, int, const void*, size_t, offt);                       \
    ssize_t r = real_##name(fd, buf, n, off);                                  \
    if (r > 0 && is_tracked(fd)) emit_write(fd, (int64_t)off, buf, (size_t)r); \
    return r;                                                                  \
  }
PWRITE(pwrite, off_t)
PWRITE(pwrite64, off64_t)
#define PWRITEV(name, offt)                                               \
  ssize_t name(int fd, const struct iovec* iov, int cnt, offt off) {      \
    REAL(ssize_t, name, int, const struct iovec*, int, offt);             \
    ssize_t r = real_##name(fd, iov, cnt, off);                           \
    if (r > 0 && is_tracked(fd)) emit_iov(fd, (int64_t)off, iov, cnt, r); \
    return r;                                                             \
  }
PWRITEV(pwritev, off_t)
PWRITEV(pwritev64, off64_t)
ssize_t pwritev2(int fd, const struct iovec* iov, int cnt, off_t off, int flags) {
  REAL(ssize_t, pwritev2, int, const struct iovec*, int, off_t, int);
  ssize_t r = real_pwritev2(fd, iov, cnt, off, flags);
  if (r > 0 && is_tracked(fd))
    emit_iov(fd, off == -1 ? lseek(fd, 0, SEEK_CUR) - r : off, iov, cnt, r);
  return r;
}

#define FTRUNC(name, offt)                                                      \
  int name(int fd, offt len) {                                                  \
    REAL(int, name, int, offt);                                                 \
    int r = real_##name(fd, len);                                               \
    if (r == 0 && is_tracked(fd)) emit(OP_TRUNC, 0, fd, len, 0, NULL, NULL, 0); \
    return r;                                                                   \
  }
FTRUNC(ftruncate, off_t)
FTRUNC(ftruncate64, off64_t)

#define FALLOC(name, offt)                               \
  int name(int fd, int mode, offt off, offt len) {       \
    REAL(int, name, int, int, offt, offt);               \
    int r = real_##name(fd, mode, off, len);             \
    if (r == 0 && is_tracked(fd)) {                      \
      if (mode & FALLOC_FL_PUNCH_HOLE)                   \
        emit(OP_PUNCH, 0, fd, off, len, NULL, NULL, 0);  \
      else if (!(mode & FALLOC_FL_KEEP_SIZE))            \
        emit(OP_EXTEND, 0, fd, off, len, NULL, NULL, 0); \
    }                                                    \
    return r;                                            \
  }
FALLOC(fallocate, off_t)
FALLOC(fallocate64, off64_t)

static int synced(int fd, int kind, int r_of_call(int), int arg) {
  (void)arg;
  if (!is_tracked(fd)) return r_of_call(fd);
  int64_t token = __atomic_add_fetch(&sync_token, 1, __ATOMIC_SEQ_CST);
  emit(OP_SYNC_BEGIN, 0, fd, kind, token, NULL, NULL, 0);
  int r = r_of_call(fd);
  if (r == 0) emit(OP_SYNC_END, 0, fd, kind, token, NULL, NULL, 0);
  return r;
}
static int call_fsync(int fd) {
  REAL(int, fsync, int);
  return real_fsync(fd);
}
static int call_fdatasync(int fd) {
  REAL(int, fdatasync, int);
  return real_fdatasync(fd);
}
int fsync(int fd) { return synced(fd, 0, call_fsync, 0); }
int fdatasync(int fd) { return synced(fd, 1, call_fdatasync, 0); }
int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags) {
  REAL(int, sync_file_range, int, off64_t, off64_t, unsigned int);
  // sync_file_range writes data out but promises nothing across a power cut (no metadata, no
  // disk cache flush): recorded as a note only, it makes nothing durable.
  int r = real_sync_file_range(fd, off, n, flags);
  if (is_tracked(fd)) emit(OP_SYNC_BEGIN, 0, fd, 2, 0, NULL, NULL, 0);
  return r;
}

static void emit2(int op, const char* a, const char* b) {
  emit(op, 0, -1, 0, 0, a, b, b ? strlen(b) : 0);
}

int rename(const char* from, const char* to) {
  REAL(int, rename, const char*, const char*);
  char a[PATH_MAX], b[PATH_MAX];
  int ta = resolve(AT_FDCWD, from, a), tb = resolve(AT_FDCWD, to, b);
  int r = real_rename(from, to);
  if (r == 0 && (ta || tb)) emit2(OP_RENAME, a, b);
  return r;
}
int renameat(int fd1, const char* from, int fd2, const char* to) {
  REAL(int, renameat, int, const char*, int, const char*);
  char a[PATH_MAX], b[PATH_MAX];
  int ta = resolve(fd1, from, a), tb = resolve(fd2, to, b);
  int r = real_renameat(fd1, from, fd2, to);
  if (r == 0 && (ta || tb)) emit2(OP_RENAME, a, b);
  return r;
}
int renameat2(int fd1, const char* from, int fd2, const char* to, unsigned int flags) {
  REAL(int, renameat2, int, const char*, int, const char*, unsigned int);
  char a[PATH_MAX], b[PATH_MAX];
  int ta = resolve(fd1, from, a), tb = resolve(fd2, to, b);
  int r = real_renameat2(fd1, from, fd2, to, flags);
  if (r == 0 && (ta || tb)) emit2(OP_RENAME, a, b);
  return r;
}
int unlink(const char* path) {
  REAL(int, unlink, const char*);
  char a[PATH_MAX];
  int t = resolve(AT_FDCWD, path, a);
  int r = real_unlink(path);
  if (r == 0 && t) emit2(OP_UNLINK, a, NULL);
  return r;
}
int unlinkat(int dirfd, const char* path, int flags) {
  REAL(int, unlinkat, int, const char*, int);
  char a[PATH_MAX];
  int t = resolve(dirfd, path, a);
  int r = real_unlinkat(dirfd, path, flags);
  if (r == 0 && t) emit2((flags & AT_REMOVEDIR) ? OP_RMDIR : OP_UNLINK, a, NULL);
  return r;
}
int rmdir(const char* path) {
  REAL(int, rmdir, const char*);
  char a[PATH_MAX];
  int t = resolve(AT_FDCWD, path, a);
  int r = real_rmdir(path);
  if (r == 0 && t) emit2(OP_RMDIR, a, NULL);
  return r;
}
int mkdir(const char* path, mode_t mode) {
  REAL(int, mkdir, const char*, mode_t);
  char a[PATH_MAX];
  int t = resolve(AT_FDCWD, path, a);
  int r = real_mkdir(path, mode);
  if (r == 0 && t) emit2(OP_MKDIR, a, NULL);
  return r;
}
int mkdirat(int dirfd, const char* path, mode_t mode) {
  REAL(int, mkdirat, int, const char*, mode_t);
  char a[PATH_MAX];
  int t = resolve(dirfd, path, a);
  int r = real_mkdirat(dirfd, path, mode);
  if (r == 0 && t) emit2(OP_MKDIR, a, NULL);
  return r;
}
int link(const char* from, const char* to) {
  REAL(int, link, const char*, const char*);
  char a[PATH_MAX], b[PATH_MAX];
  int ta = resolve(AT_FDCWD, from, a), tb = resolve(AT_FDCWD, to, b);
  int r = real_link(from, to);
  if (r == 0 && (ta || tb)) emit2(OP_LINK, a, b);
  return r;
}
int linkat(int fd1, const char* from, int fd2, const char* to, int flags) {
  REAL(int, linkat, int, const char*, int, const char*, int);
  char a[PATH_MAX], b[PATH_MAX];
  int ta = resolve(fd1, from, a), tb = resolve(fd2, to, b);
  int r = real_linkat(fd1, from, fd2, to, flags);
  // O_TMPFILE + linkat(AT_EMPTY_PATH) (the `files` blob store) is not modelled: recorded as a
  // link from an empty name, which powercut.py refuses.
  if (r == 0 && (ta || tb)) emit2(OP_LINK, (flags & AT_EMPTY_PATH) ? "" : a, b);
  return r;
}

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  REAL(void*, mmap, void*, size_t, int, int, int, off_t);
  void* p = real_mmap(addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && (prot & PROT_WRITE) && (flags & MAP_SHARED) && is_tracked(fd))
    emit(OP_MMAP, 0, fd, (int64_t)off, (int64_t)len, NULL, NULL, 0);
  return p;
}
void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off64_t off) {
  REAL(void*, mmap64, void*, size_t, int, int, int, off64_t);
  void* p = real_mmap64(addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && (prot & PROT_WRITE) && (flags & MAP_SHARED) && is_tracked(fd))
    emit(OP_MMAP, 0, fd, (int64_t)off, (int64_t)len, NULL, NULL, 0);
  return p;
}
