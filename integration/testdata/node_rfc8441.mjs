// node_rfc8441.mjs: Node's built-in HTTP/2 client as a third-party RFC 8441
// client of h2proxy. Only Node built-ins (node:http2, node:crypto, node:fs).
//
// Usage: node node_rfc8441.mjs PROXY_URL CA_PEM_FILE TARGETS_JSON
//   TARGETS_JSON: [{"scheme": "http"|"https", "authority": "host:port", "path": "/echo"}, ...]
//
// For each target, on one h2 connection to the proxy: wait for the proxy's
// SETTINGS and check SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3), send
// an extended CONNECT (§4), expect :status 200, echo one masked text frame
// (RFC 6455 §5.2, §5.3), run a close handshake (§5.5.1) and wait for the
// end of the stream. Prints one JSON object: {enableConnectProtocol,
// results: [{target, status, echoed, closeCode, ended, error}]}.

import http2 from 'node:http2';
import crypto from 'node:crypto';
import fs from 'node:fs';

const [proxyURL, caFile, targetsJSON] = process.argv.slice(2);
const targets = JSON.parse(targetsJSON);
const out = { enableConnectProtocol: null, results: [] };

const watchdog = setTimeout(() => {
  out.error = 'timed out';
  console.log(JSON.stringify(out));
  process.exit(2);
}, 20000);

// A client frame: FIN, opcode, MASK bit and a fresh masking key (§5.3).
function clientFrame(opcode, payload) {
  if (payload.length > 125) throw new Error('payload too long for this client');
  const mask = crypto.randomBytes(4);
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i] ^ mask[i % 4];
  return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | payload.length]), mask, masked]);
}

// Server frames are unmasked (§5.1); small ones are all we expect here.
function parseFrame(buf) {
  if (buf.length < 2) return null;
  const len = buf[1] & 0x7f;
  if (buf[1] & 0x80) throw new Error('server frame is masked');
  if (len > 125) throw new Error('unexpectedly long server frame');
  if (buf.length < 2 + len) return null;
  return { fin: !!(buf[0] & 0x80), opcode: buf[0] & 0x0f, payload: buf.subarray(2, 2 + len), rest: buf.subarray(2 + len) };
}

function run(session, target) {
  return new Promise((resolve) => {
    const result = { target: `${target.scheme}://${target.authority}${target.path}` };
    const msg = `hello from node over ${target.scheme}`;
    let buf = Buffer.alloc(0);
    let phase = 'echo';
    const req = session.request({
      ':method': 'CONNECT',
      ':protocol': 'websocket',
      ':scheme': target.scheme,
      ':authority': target.authority,
      ':path': target.path,
      'sec-websocket-version': '13',
      'origin': 'https://node.example',
    }, { endStream: false });
    req.on('response', (headers) => {
      result.status = headers[':status'];
      result.headers = headers;
      if (result.status !== 200) return;
      req.write(clientFrame(0x1, Buffer.from(msg)));
    });
    req.on('data', (chunk) => {
      if (result.status !== 200) {
        result.body = (result.body || '') + chunk.toString();
        return;
      }
      buf = Buffer.concat([buf, chunk]);
      for (let f; (f = parseFrame(buf)); buf = f.rest) {
        if (phase === 'echo' && f.opcode === 0x1) {
          result.echoed = f.payload.toString();
          phase = 'close';
          const code = Buffer.alloc(2);
          code.writeUInt16BE(1000);
          req.write(clientFrame(0x8, Buffer.concat([code, Buffer.from('bye')])));
        } else if (phase === 'close' && f.opcode === 0x8) {
          result.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : null;
          phase = 'closed';
        }
      }
    });
    req.on('end', () => {
      // END_STREAM from the proxy: the origin ended its side (§7.1.1:
      // the server closes first). Now end ours.
      result.ended = true;
      req.end();
    });
    req.on('error', (err) => { result.error = String(err); });
    req.on('close', () => {
      if (req.rstCode) result.rstCode = req.rstCode;
      resolve(result);
    });
  });
}

const session = http2.connect(proxyURL, { ca: fs.readFileSync(caFile) });
session.on('error', (err) => {
  out.error = String(err);
  console.log(JSON.stringify(out));
  process.exit(1);
});
session.once('remoteSettings', async (settings) => {
  out.enableConnectProtocol = settings.enableConnectProtocol === true;
  for (const target of targets) {
    out.results.push(await run(session, target));
  }
  clearTimeout(watchdog);
  session.close();
  console.log(JSON.stringify(out));
});
