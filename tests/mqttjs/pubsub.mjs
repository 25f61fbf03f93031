// A real MQTT.js client through the gateway's WebSocket listener (run by gateway/tests/mqttjs.rs).
// Usage: node pubsub.mjs URL CLIENT_ID [USERNAME PASSWORD] ; for wss:// set CA, CERT and KEY
// (file paths) in the environment. Prints one JSON line with what happened; exits 1 on a timeout.
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';

const [url, clientId, username, password] = process.argv.slice(2);
const options = {
  clientId,
  protocolVersion: 5,
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 5000,
  username,
  password,
};
if (process.env.CA) {
  options.ca = readFileSync(process.env.CA);
  options.cert = readFileSync(process.env.CERT);
  options.key = readFileSync(process.env.KEY);
  options.servername = 'localhost';
}
const out = { connected: false, received: [] };
const fail = (why) => {
  out.error = String(why);
  console.log(JSON.stringify(out));
  process.exit(1);
};
setTimeout(() => fail('timeout'), 10000);

const client = mqtt.connect(url, options);
client.on('error', (e) => fail(e.message));
client.on('message', (topic, payload) => out.received.push([topic, payload.toString()]));
client.on('connect', async () => {
  out.connected = true;
  try {
    out.allowedSub = (await client.subscribeAsync('ws/#', { qos: 1 })).map((g) => g.qos);
    try {
      out.deniedSub = (await client.subscribeAsync('secret/#', { qos: 1 })).map((g) => g.qos);
    } catch (e) {
      // MQTT.js turns a SUBACK failure code into an error carrying the packet.
      out.deniedSub = e.packet?.granted ?? e.packet?.reasonCodes ?? String(e);
    }
    await client.publishAsync('ws/js', 'hello', { qos: 1 });
    try {
      await client.publishAsync('secret/js', 'nope', { qos: 1 });
      out.deniedPublish = 0;
    } catch (e) {
      out.deniedPublish = e.code ?? e.reasonCode ?? String(e);
    }
    // The allowed message comes back through the subscription.
    const deadline = Date.now() + 5000;
    while (out.received.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await client.endAsync();
    console.log(JSON.stringify(out));
    process.exit(0);
  } catch (e) {
    fail(e.message ?? e);
  }
});
