// node-keyobject: node-seed with the one fix a careful Node user would make: the public key is
// parsed once with crypto.createPublicKey instead of from the PEM string on every request.
// Everything else is identical to node_seed.js, so the gap between the two is the PEM parse.
// Used only as a baseline by bench/run.py:  node node_keyobject.js PORT PUBLIC_KEY_FILE [HOST]
'use strict';

const http = require('http');
const crypto = require('crypto');
const fs = require('fs');

const [port, keyFile, host = '127.0.0.1'] = process.argv.slice(2);
const PUBLIC_KEY = crypto.createPublicKey(fs.readFileSync(keyFile, 'utf8'));

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const signature = req.headers['x-thunderstack-signature'];

    const verifier = crypto.createVerify('RSA-SHA256');
    verifier.update(body);
    let valid = false;
    try {
      valid = Boolean(signature) && verifier.verify(PUBLIC_KEY, signature, 'base64');
    } catch (err) {
      valid = false;
    }
    if (!valid) {
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('Invalid signature');
      return;
    }

    const event = JSON.parse(body.toString('utf8'));
    void event;
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('OK');
  });
});

server.listen(Number(port), host, () => console.log(`node-keyobject listening on ${host}:${port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
