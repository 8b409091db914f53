// Holds one of the extension's LWLocks for a scope, so that every way out of the scope, an
// exception included, releases it.
#pragma once

#include "cpp_wall.h"

extern "C" {
#include "storage/lwlock.h"
}

namespace pgi::pg {

class LwLockGuard {
  public:
    LwLockGuard(LWLock *lock, LWLockMode mode) : lock_(lock) {
        pg_guard_void([&]() { LWLockAcquire(lock_, mode); });
    }
    // LWLockRelease cannot fail for a lock this process holds.
    ~LwLockGuard() { LWLockRelease(lock_); }
    LwLockGuard(const LwLockGuard &) = delete;
    LwLockGuard &operator=(const LwLockGuard &) = delete;

  private:
    LWLock *lock_;
};

}  // namespace pgi::pg
