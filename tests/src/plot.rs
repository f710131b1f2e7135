//! A line plot written as PNG with no dependency (for `cargo xtask bench`): an RGB canvas,
//! a 5×7 bitmap font (upper case, digits, a little punctuation), and a PNG encoder with
//! stored (uncompressed) deflate blocks.

/// One line of the plot.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// RGB colour.
    pub color: [u8; 3],
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed.
    pub dashed: bool,
}

/// An RGB image.
pub struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(w: usize, h: usize) -> Self {
        Self { w, h, px: vec![255; w * h * 3] }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    /// A line `width` pixels thick; `dash` > 0 draws `dash` pixels on, `dash` off.
    pub fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], width: i64, dash: usize) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            if dash > 0 && (i / dash) % 2 == 1 {
                continue;
            }
            let t = i as f64 / n as f64;
            let (x, y) = ((x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64);
            for dx in -(width / 2)..=(width - 1) / 2 {
                for dy in -(width / 2)..=(width - 1) / 2 {
                    self.set(x + dx, y + dy, c);
                }
            }
        }
    }

    /// A filled rectangle.
    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// Text at (x, y) (top left), `scale` pixels per font pixel; lower case is drawn upper.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        self.rect(x + (i as i64 * 6 + col) * scale, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Width in pixels of `s` drawn at `scale`.
    pub fn text_width(s: &str, scale: i64) -> i64 {
        s.chars().count() as i64 * 6 * scale
    }

    /// The image as a PNG file.
    pub fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity((self.w * 3 + 1) * self.h);
        for row in self.px.chunks(self.w * 3) {
            raw.push(0); // filter: none
            raw.extend_from_slice(row);
        }
        let mut z = vec![0x78, 0x01];
        z.extend_from_slice(&deflate_rle(&raw));
        z.extend_from_slice(&adler32(&raw).to_be_bytes());
        let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        chunk(&mut out, b"IDAT", &z);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// LSB-first bit writer for deflate.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, v: u32, n: u32) {
        self.acc |= (v as u64) << self.n;
        self.n += n;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code: most significant bit first.
    fn code(&mut self, code: u32, n: u32) {
        self.put(code.reverse_bits() >> (32 - n), n);
    }

    fn literal(&mut self, sym: u32) {
        match sym {
            0..=143 => self.code(0x30 + sym, 8),
            144..=255 => self.code(0x190 + sym - 144, 9),
            256..=279 => self.code(sym - 256, 7),
            _ => self.code(0xc0 + sym - 280, 8),
        }
    }
}

const LEN_BASE: [u32; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LEN_EXTRA: [u32; 29] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];

/// Deflate (RFC 1951) in one fixed-Huffman block whose only matches repeat the previous
/// byte or the previous pixel (distance 1 or 3): enough for a chart of flat colours.
fn deflate_rle(data: &[u8]) -> Vec<u8> {
    let mut b = Bits { out: Vec::new(), acc: 0, n: 0 };
    b.put(1, 1); // final block
    b.put(1, 2); // fixed Huffman codes
    let mut i = 0;
    while i < data.len() {
        let run = |d: usize| {
            if i < d {
                return 0;
            }
            let mut n = 0;
            while n < 258 && i + n < data.len() && data[i + n] == data[i + n - d] {
                n += 1;
            }
            n
        };
        let (r1, r3) = (run(1), run(3));
        let (len, dist) = if r1 >= r3 { (r1, 1) } else { (r3, 3) };
        if len >= 3 {
            let k = LEN_BASE.iter().rposition(|&l| l as usize <= len).unwrap();
            b.literal(257 + k as u32);
            b.put(len as u32 - LEN_BASE[k], LEN_EXTRA[k]);
            b.code(if dist == 1 { 0 } else { 2 }, 5);
            i += len;
        } else {
            b.literal(data[i] as u32);
            i += 1;
        }
    }
    b.literal(256);
    b.put(0, 7); // flush the last byte
    b.out
}

fn chunk(out: &mut Vec<u8>, ty: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(ty);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'A' => [0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'B' => [0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e],
        'C' => [0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e],
        'D' => [0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c],
        'E' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f],
        'F' => [0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10],
        'G' => [0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f],
        'H' => [0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11],
        'I' => [0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f],
        'M' => [0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'P' => [0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10],
        'Q' => [0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d],
        'R' => [0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11],
        'S' => [0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e],
        'T' => [0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a],
        'X' => [0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04],
        'Z' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f],
        '.' => [0, 0, 0, 0, 0, 0x0c, 0x0c],
        ',' => [0, 0, 0, 0, 0x0c, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1f, 0, 0, 0],
        '+' => [0, 0x04, 0x04, 0x1f, 0x04, 0x04, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        ':' => [0, 0x0c, 0x0c, 0, 0x0c, 0x0c, 0],
        '=' => [0, 0, 0x1f, 0, 0x1f, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1f],
        '<' => [0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02],
        '>' => [0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        ' ' => [0; 7],
        _ => [0x1f, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1f],
    }
}

/// A line chart with a log-10 x axis: title, axis labels, x ticks at the data's x values,
/// y from 0 to the largest value (rounded up), a legend.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Vec<u8> {
    // The legend's column is as wide as its longest label (the plot area stays 570 wide).
    let legend = series.iter().map(|s| Canvas::text_width(&s.label, 2)).max().unwrap_or(0);
    let right = (legend + 62).max(300);
    let (w, h) = (660 + right, 600i64);
    let (left, top, bottom) = (90i64, 60i64, 70i64);
    let mut c = Canvas::new(w as usize, h as usize);
    let black = [0, 0, 0];
    let grey = [210, 210, 210];
    let xs: Vec<f64> = {
        let mut v: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    };
    let ymax = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max);
    let ymax = ymax * 1.08;
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 500.0]
        .into_iter()
        .find(|s| ymax / s <= 8.0)
        .unwrap_or(1000.0);
    let ytop = (ymax / step).ceil() * step;
    let (lx0, lx1) = (xs.first().copied().unwrap_or(1.0).log10(), xs.last().copied().unwrap_or(10.0).log10());
    let span = if lx1 > lx0 { lx1 - lx0 } else { 1.0 };
    let px = |x: f64| left as f64 + 20.0 + (x.log10() - lx0) / span * (w - left - right - 40) as f64;
    let py = |y: f64| (h - bottom) as f64 - y / ytop * (h - top - bottom) as f64;
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= ytop + 1e-9 {
        c.line((left as f64, py(y)), ((w - right) as f64, py(y)), grey, 1, 0);
        let t = format!("{y}");
        c.text(left - 10 - Canvas::text_width(&t, 2), py(y) as i64 - 7, &t, 2, black);
        y += step;
    }
    for &x in &xs {
        c.line((px(x), top as f64), (px(x), (h - bottom) as f64), grey, 1, 0);
        let t = if x >= 1000.0 { format!("{}K", x / 1000.0) } else { format!("{x}") };
        c.text(px(x) as i64 - Canvas::text_width(&t, 2) / 2, h - bottom + 10, &t, 2, black);
    }
    c.line((left as f64, top as f64), (left as f64, (h - bottom) as f64), black, 2, 0);
    c.line((left as f64, (h - bottom) as f64), ((w - right) as f64, (h - bottom) as f64), black, 2, 0);
    c.text(left + 50, 12, title, 2, black);
    c.text((w - right) / 2 - Canvas::text_width(x_label, 2) / 2 + left / 2, h - 30, x_label, 2, black);
    c.text(10, top - 32, y_label, 2, black);
    for (i, s) in series.iter().enumerate() {
        for p in s.points.windows(2) {
            c.line((px(p[0].0), py(p[0].1)), (px(p[1].0), py(p[1].1)), s.color, 3, if s.dashed { 8 } else { 0 });
        }
        for p in &s.points {
            c.rect(px(p.0) as i64 - 4, py(p.1) as i64 - 4, 9, 9, s.color);
        }
        let ly = top + 10 + i as i64 * 28;
        let dash = if s.dashed { 6 } else { 0 };
        c.line(
            ((w - right + 15) as f64, (ly + 6) as f64),
            ((w - right + 45) as f64, (ly + 6) as f64),
            s.color,
            3,
            dash,
        );
        c.text(w - right + 52, ly, &s.label, 2, black);
    }
    c.png()
}

#[cfg(test)]
mod tests {
    #[test]
    fn png_is_well_formed() {
        let png = super::chart(
            "T",
            "X",
            "Y",
            &[super::Series {
                label: "a".into(),
                color: [255, 0, 0],
                points: vec![(30.0, 1.0), (1e5, 2.0)],
                dashed: false,
            }],
        );
        std::fs::write(std::env::temp_dir().join("ps-plot-test.png"), &png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() < 100_000, "compressed: {} bytes", png.len());
        assert_eq!(super::crc32(b"IEND"), 0xae42_6082);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }
}
