// A destination for shoprelay in plain Node (no npm packages): verifies
// X-Signature exactly as Segment's webhook docs do, after JSON.parse:
//   crypto.createHmac('sha1', secret).update(JSON.stringify(req.body)).digest('hex')
// For a webhook-batch body (a JSON array) the signature covers body[0].
//
//   node examples/node-receiver.js            # 127.0.0.1:9000, path /events
//   PORT=9100 HOST=0.0.0.0 RECEIVER_SECRET=... node examples/node-receiver.js
'use strict';

const http = require('http');
const crypto = require('crypto');

const secret = process.env.RECEIVER_SECRET || 'shoprelay-dev-receiver';
const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT || 9000);

function verify(body, signature) {
  const signed = Array.isArray(body) ? body[0] : body;
  const expected = crypto.createHmac('sha1', secret).update(JSON.stringify(signed)).digest('hex');
  const given = Buffer.from(String(signature || ''), 'utf8');
  const want = Buffer.from(expected, 'utf8');
  return given.length === want.length && crypto.timingSafeEqual(given, want);
}

function describe(e) {
  const who = e.userId ? `userId=${e.userId}` : e.anonymousId ? `anonymousId=${e.anonymousId}` : '-';
  const name = e.type === 'track' ? JSON.stringify(e.event) : '-';
  return `${String(e.type).padEnd(9)} ${name.padEnd(28)} ${who.padEnd(40)} messageId=${e.messageId}`;
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/events') {
    res.writeHead(404).end('not found\n');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (err) {
      res.writeHead(400).end('not JSON\n');
      return;
    }
    if (!verify(body, req.headers['x-signature'])) {
      console.error('401: X-Signature missing or wrong');
      res.writeHead(401).end('bad signature\n');
      return;
    }
    const events = Array.isArray(body) ? body : body.batch || [body];
    for (const e of events) console.log(describe(e));
    res.writeHead(200).end('ok\n');
  });
});
// PORT=0 picks a free port; the line below says which.
server.listen(port, host, () => {
  console.error(`node receiver: POST http://${host}:${server.address().port}/events`);
});
