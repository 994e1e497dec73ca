// The seed's Node.js producer and consumer (Pulsar's WebSocket API), as written but for
// Buffer.from (new Buffer is deprecated), the URL from the command line, and an end: the
// producer closes after its ack, the consumer after N messages. Each prints what it received.
//
//   node pulsar_ws_sample.js produce URL
//   node pulsar_ws_sample.js consume URL N
var WebSocket = require('ws');
var [mode, url, count] = process.argv.slice(2);

if (mode === 'produce') {
  var ws = new WebSocket(url);

  var message = {
    "payload" : Buffer.from("Hello World").toString('base64'),
    "properties": {
      "key1" : "value1",
      "key2" : "value2"
    },
    "context" : "1"
  };

  ws.on('open', function() {
    // Send one message
    ws.send(JSON.stringify(message));
  });

  ws.on('message', function(message) {
    console.log('%s', message);
    ws.close();
  });
} else {
  var socket = new WebSocket(url);
  var left = Number(count);

  socket.onmessage = function(pckt) {
    var receiveMsg = JSON.parse(pckt.data);
    var ackMsg = {"messageId" : receiveMsg.messageId};
    socket.send(JSON.stringify(ackMsg));
    console.log('%s', pckt.data);
    if (--left === 0) {
      socket.close();
    }
  };
}
