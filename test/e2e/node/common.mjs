// What the e2e clients share: one PASS/FAIL line per check, like test/lib/check.sh, and an exit
// status the calling script can count.
let failures = 0;

export function check(name, ok, detail = '') {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}`);
  if (!ok) {
    failures++;
    if (detail) console.log(`     ${detail}`);
  }
}
export function checkEq(name, expected, actual) {
  const e = JSON.stringify(expected), a = JSON.stringify(actual);
  check(name, e === a, `expected ${e}, got ${a}`);
}
// The mock upstream counts tokens as words (test/mock/README.md); predictions count the same way.
export const words = (s) => s.split(/\s+/).filter(Boolean).length;

export function finish() {
  process.exit(failures ? 1 : 0);
}
