// A fixed-capacity hash table over memory the host provides, for the gateway's counters in
// shared memory (rate limiter states, usage deltas, metrics). Entries are plain structs with a
// fixed-size key, so the table holds no pointers and every process can map it anywhere. Nothing
// here locks: the host serialises every call with its own lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace pgi::governance {

// Text as shared memory holds it: at most N - 1 bytes, zero-padded so that equality is one
// memcmp. Longer text is cut, so callers bound what they store.
template <std::size_t N>
struct FixedText {
    char text[N];

    static FixedText of(std::string_view s) {
        FixedText n;
        std::memset(n.text, 0, sizeof(n.text));
        std::memcpy(n.text, s.data(), s.size() < sizeof(n.text) ? s.size() : sizeof(n.text) - 1);
        return n;
    }
    std::string_view view() const { return std::string_view(text, ::strnlen(text, sizeof(text))); }
    bool operator==(const FixedText &o) const {
        return std::memcmp(text, o.text, sizeof(text)) == 0;
    }
};

// A service's or an access key's name: the longest the catalog accepts is 63 bytes.
using Name = FixedText<64>;

// A tenant's entry in tables keyed by access key names, under a name no key can have (key names
// start with a letter or digit; a tenant has at most 62 bytes).
inline Name tenant_entry_name(std::string_view tenant) {
    char text[64];
    text[0] = '\x01';
    const std::size_t n = tenant.size() < 62 ? tenant.size() : 62;
    std::memcpy(text + 1, tenant.data(), n);
    return Name::of(std::string_view(text, n + 1));
}

// FNV-1a: stable across processes and builds, unlike std::hash.
inline uint64_t hash_bytes(const void *data, std::size_t size,
                           uint64_t h = 14695981039346656037ull) {
    const auto *p = static_cast<const unsigned char *>(data);
    for (std::size_t i = 0; i < size; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

// Only the text's own bytes: the zero padding adds nothing.
template <std::size_t N>
inline uint64_t hash_of(const FixedText<N> &n, uint64_t h = 14695981039346656037ull) {
    std::string_view v = n.view();
    return hash_bytes(v.data(), v.size(), h);
}

// Entry must be trivially copyable with members `bool used`, `uint64_t hash` and `Key key`, where
// Key has operator==; callers pass the key's hash along with it.
// Open addressing with linear probing over a power-of-two number of slots at most half full;
// removal shifts the following entries back, so no tombstones build up.
template <class Entry>
class FixedTable {
  public:
    using Key = decltype(Entry::key);

    struct Header {
        uint32_t slots;        // a power of two
        uint32_t max_entries;  // at most slots / 2
        uint32_t count;
        uint32_t padding;  // keeps the entries after the header 8-byte aligned
    };

    static uint32_t slots_for(uint32_t max_entries) {
        uint32_t slots = 16;
        while (slots < 2 * max_entries)
            slots *= 2;
        return slots;
    }
    static std::size_t bytes(uint32_t max_entries) {
        static_assert(sizeof(Header) % alignof(Entry) == 0, "entries must stay aligned");
        return sizeof(Header) + sizeof(Entry) * static_cast<std::size_t>(slots_for(max_entries));
    }
    // Prepares zeroed memory of bytes(max_entries).
    static void format(void *memory, uint32_t max_entries) {
        std::memset(memory, 0, bytes(max_entries));
        auto *h = static_cast<Header *>(memory);
        h->slots = slots_for(max_entries);
        h->max_entries = max_entries;
    }

    explicit FixedTable(void *memory)
        : header_(static_cast<Header *>(memory)),
          entries_(reinterpret_cast<Entry *>(static_cast<char *>(memory) + sizeof(Header))) {}

    uint32_t count() const { return header_->count; }
    uint32_t max_entries() const { return header_->max_entries; }

    Entry *find(const Key &key, uint64_t hash) const {
        uint32_t mask = header_->slots - 1;
        for (uint32_t i = static_cast<uint32_t>(hash) & mask;; i = (i + 1) & mask) {
            Entry &e = entries_[i];
            if (!e.used)
                return nullptr;
            if (e.hash == hash && e.key == key)
                return &e;
        }
    }

    // The entry for key, added zeroed (but for used, hash and key) when absent. Null when absent
    // and the table already holds max_entries.
    Entry *find_or_insert(const Key &key, uint64_t hash) {
        uint32_t mask = header_->slots - 1;
        for (uint32_t i = static_cast<uint32_t>(hash) & mask;; i = (i + 1) & mask) {
            Entry &e = entries_[i];
            if (e.used) {
                if (e.hash == hash && e.key == key)
                    return &e;
                continue;
            }
            if (header_->count >= header_->max_entries)
                return nullptr;
            std::memset(static_cast<void *>(&e), 0, sizeof(Entry));
            e.used = true;
            e.hash = hash;
            e.key = key;
            header_->count++;
            return &e;
        }
    }

    // Calls f(entry) for every entry; entries for which it returns true are removed.
    template <class F>
    void remove_if(F &&f) {
        uint32_t mask = header_->slots - 1;
        // Start just after an empty slot (there is one: the table is at most half full), so no
        // cluster wraps past the start and backward shifts only move entries not yet visited
        // into the slot being looked at.
        uint32_t start = 0;
        while (entries_[start].used)
            start++;
        uint32_t i = (start + 1) & mask;
        for (uint32_t seen = 0; seen < header_->slots - 1;) {
            Entry &e = entries_[i];
            if (e.used && f(e)) {
                erase_at(i);
                continue;  // look at what moved in
            }
            i = (i + 1) & mask;
            seen++;
        }
    }

    template <class F>
    void for_each(F &&f) const {
        for (uint32_t i = 0; i < header_->slots; i++)
            if (entries_[i].used)
                f(entries_[i]);
    }

  private:
    void erase_at(uint32_t hole) {
        uint32_t mask = header_->slots - 1;
        for (uint32_t j = (hole + 1) & mask;; j = (j + 1) & mask) {
            Entry &e = entries_[j];
            if (!e.used)
                break;
            uint32_t home = static_cast<uint32_t>(e.hash) & mask;
            // e may fill the hole when the hole lies on its probe path (cyclically between its
            // home slot and where it is).
            if (((j - home) & mask) >= ((j - hole) & mask)) {
                entries_[hole] = e;
                hole = j;
            }
        }
        std::memset(static_cast<void *>(&entries_[hole]), 0, sizeof(Entry));
        header_->count--;
    }

    Header *header_;
    Entry *entries_;
};

}  // namespace pgi::governance
