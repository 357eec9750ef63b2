/**
 * One 512-byte ustar header, for tests and generators that write tar streams by hand (so a
 * header can claim any size, whatever follows it). Owners are 0/0; names and link names are
 * latin1 and cut at 100 bytes, as ustar's fields are.
 */
export function ustarHeader({ name, size = 0, mode = 0o644, typeflag = '0', linkname = '', mtime = 1700000000 }) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'latin1');
  h.write(octal(mode, 8), 100, 'latin1');
  h.write(octal(0, 8), 108, 'latin1');
  h.write(octal(0, 8), 116, 'latin1');
  h.write(octal(size, 12), 124, 'latin1');
  h.write(octal(mtime, 12), 136, 'latin1');
  h.write(typeflag, 156, 'latin1');
  h.write(linkname, 157, 100, 'latin1');
  h.write('ustar\x0000', 257, 'latin1');
  h.fill(' ', 148, 156); // the checksum is computed with its own field as spaces
  let sum = 0;
  for (const x of h) sum += x;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

/** A NUL-terminated octal field of `width` bytes. */
export function octal(value, width) {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}
