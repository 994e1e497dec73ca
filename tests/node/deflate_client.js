// Node's `ws` with perMessageDeflate on (threshold 0, so every message is compressed): sends a
// 4 KiB JSON text message and a short one, checks each echo, and prints the extension the server
// agreed to and whether the echoes came back equal.
//
//   node deflate_client.js URL
var WebSocket = require('ws');
var url = process.argv[2];

var rows = [];
for (var i = 0; i < 120; i++) rows.push({ symbol: 'S' + (i % 50), price: i * 1.25, side: 'buy' });
var messages = [JSON.stringify(rows).slice(0, 4096), 'short'];

var ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
ws.on('upgrade', function (response) {
  console.log(response.headers['sec-websocket-extensions'] || 'none');
});
ws.on('open', function () {
  ws.send(messages[0]);
});
var received = 0;
ws.on('message', function (data, isBinary) {
  var expected = messages[received];
  console.log(!isBinary && data.toString() === expected ? 'equal' : 'differs');
  received += 1;
  if (received < messages.length) ws.send(messages[received]);
  else ws.close(1000);
});
ws.on('error', function (error) {
  console.error(error);
  process.exit(1);
});
