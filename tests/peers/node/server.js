#!/usr/bin/env node
// The CNC machine's OPC UA server for zonegate's differential tests, on node-opcua: a second,
// independent stack next to tests/peers/opcua_server.py (asyncua), with the same address space
// and the same journal format, so that a test can run one set of crafted requests against both
// and count on each what it executed.
//
//   node tests/peers/node/server.js --host ADDR [--port 4840] --journal FILE [--pki DIR]
//
// Listens on opc.tcp://ADDR:PORT/cnc (SecurityPolicy None, anonymous), namespace
// urn:zonegate:cnc (index 2): object ns=2;s=Machine, variables ns=2;s=Machine.FeedOverride,
// SpindleOverride (Double), ProgramNumber (UInt32), ToolOffset (Double), DoorUnlock (Boolean)
// writable, SpindleSpeed (Double) and Mode (String) read-only, methods ns=2;s=Machine.SelectProgram
// (UInt32 in, Boolean out), ResetAlarm and Unlock. Prints `READY opc.tcp://... ns=2` once
// listening; exits 0 on SIGTERM/SIGINT.
//
// Journal (--journal, appended, each line written synchronously before the response is sent):
//   {"event": "write", "peer": "10.30.0.11:40112", "security": "None", "session": "ns=1;g=...",
//    "node": "ns=2;s=Machine.FeedOverride", "attribute": "Value", "value": 110, "type": "Double",
//    "status": "Good"}
//   {"event": "call", "peer": ..., "object": "ns=2;s=Machine", "method": "ns=2;s=Machine.Unlock",
//    "args": [{"value": 1001, "type": "UInt32"}], "status": "Good"}
//   {"event": "register", "peer": ..., "node": "ns=2;s=Machine.DoorUnlock", "alias": "ns=9999;i=1"}
// One write line per WriteValue and one call line per method of every Write and Call that reached
// the server's write and call services, after node-opcua resolved RegisterNodes aliases: `node`
// (`object`, `method`) is the node the server acted on, `requested` the id the request named when
// it differs. `status` Good means it executed. JOURNAL.state holds the current
// values of the Machine variables (rewritten after every write and call).
"use strict";

const fs = require("fs");
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { SecurityPolicy, MessageSecurityMode } = require("node-opcua-secure-channel");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { Variant, DataType, VariantArrayType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const { AttributeIds } = require("node-opcua-data-model");
const { nodesets } = require("node-opcua-nodesets");

const NAMESPACE_URI = "urn:zonegate:cnc";

function parseArgs(argv) {
  const args = { port: 4840, journal: null, host: null, pki: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--host") args.host = next();
    else if (a === "--port") args.port = Number(next());
    else if (a === "--journal") args.journal = next();
    else if (a === "--pki") args.pki = next();
    else usage(`unknown argument ${a}`);
  }
  if (!args.host || args.host === "0.0.0.0" || args.host === "::") usage("--host ADDR is required (never a wildcard)");
  return args;
}

function usage(msg) {
  process.stderr.write(`server.js: ${msg}\nusage: server.js --host ADDR [--port N] --journal FILE [--pki DIR]\n`);
  process.exit(2);
}

const VARIABLES = [
  ["FeedOverride", DataType.Double, 100.0, true],
  ["SpindleOverride", DataType.Double, 100.0, true],
  ["ProgramNumber", DataType.UInt32, 1000, true],
  ["ToolOffset", DataType.Double, 0.0, true],
  ["DoorUnlock", DataType.Boolean, false, true],
  ["SpindleSpeed", DataType.Double, 12000.0, false],
  ["Mode", DataType.String, "auto", false],
];

// A value as plain JSON, as opcua_server.py's jsonable: Variants unwrapped, bytes as hex.
function jsonable(v) {
  if (v === null || v === undefined) return null;
  if (v instanceof Variant) return jsonable(v.value);
  if (typeof v === "bigint") return Number(v);
  if (Buffer.isBuffer(v)) return v.toString("hex");
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return Array.from(v, jsonable);
  if (v instanceof Date) return v.toISOString();
  if (typeof v === "number" || typeof v === "string" || typeof v === "boolean") return v;
  if (v.statusCode !== undefined && v.value !== undefined) return jsonable(v.value); // DataValue
  if (typeof v.toString === "function") return v.toString();
  return String(v);
}

function variantJson(variant) {
  if (!variant) return { value: null, type: null };
  const out = { value: jsonable(variant.value), type: DataType[variant.dataType] ?? String(variant.dataType) };
  if (variant.arrayType !== undefined && variant.arrayType !== VariantArrayType.Scalar) {
    out.array = VariantArrayType[variant.arrayType];
    if (variant.dimensions) out.dimensions = Array.from(variant.dimensions);
  }
  return out;
}

function attributeName(id) {
  return AttributeIds[id] ?? id;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const journalFd = args.journal ? fs.openSync(args.journal, "a") : null;
  const journal = (entry) => {
    if (journalFd !== null) fs.writeSync(journalFd, JSON.stringify(entry) + "\n");
  };
  const pki = args.pki || path.join(require("os").tmpdir(), `zonegate-node-pki-${process.pid}`);

  let addressSpace = null;
  let ns = null;
  const stateFile = args.journal ? args.journal + ".state" : null;
  const counts = { writes: 0, calls: 0 };
  const dumpState = () => {
    if (!stateFile || !addressSpace) return;
    const values = {};
    for (const [name] of VARIABLES) {
      const node = addressSpace.findNode(`ns=${ns.index};s=Machine.${name}`);
      values[`ns=2;s=Machine.${name}`] = node ? jsonable(node.readValue().value.value) : null;
    }
    fs.writeFileSync(stateFile + ".tmp", JSON.stringify({ ...counts, values }));
    fs.renameSync(stateFile + ".tmp", stateFile);
  };

  const base = (context, event) => {
    const session = context && context.session;
    const channel = session && session.channel;
    const entry = { event, peer: "?", security: "None" };
    if (channel) {
      entry.peer = `${channel.remoteAddress}:${channel.remotePort}`;
      entry.security = channel.securityMode === MessageSecurityMode.None ? "None" : String(channel.securityPolicy);
    }
    if (session && session.nodeId) entry.session = session.nodeId.toString();
    return entry;
  };

  const start = async () => {
    const serverCertificateManager = new OPCUACertificateManager({
      rootFolder: path.join(pki, "own"),
      automaticallyAcceptUnknownCertificate: true,
    });
    const userCertificateManager = new OPCUACertificateManager({
      rootFolder: path.join(pki, "user"),
      automaticallyAcceptUnknownCertificate: true,
    });
    const server = new OPCUAServer({
      host: args.host,
      port: args.port,
      hostname: args.host,
      resourcePath: "/cnc",
      nodeset_filename: [nodesets.standard],
      securityPolicies: [SecurityPolicy.None],
      securityModes: [MessageSecurityMode.None],
      allowAnonymous: true,
      // Every crafted case opens its own session; the harness runs about a hundred.
      serverCapabilities: { maxSessions: 1000 },
      serverCertificateManager,
      userCertificateManager,
      serverInfo: {
        applicationUri: "urn:zonegate:test:cnc-server-node",
        productUri: "urn:zonegate:test:peers",
        applicationName: { text: "zonegate test CNC (node-opcua)" },
      },
      buildInfo: { productName: "zonegate test CNC (node-opcua)", manufacturerName: "zonegate test peers" },
    });
    await server.initialize();
    addressSpace = server.engine.addressSpace;
    ns = addressSpace.registerNamespace(NAMESPACE_URI);
    if (ns.index !== 2) throw new Error(`namespace ${NAMESPACE_URI} got index ${ns.index}, not 2`);
    const machine = ns.addObject({
      organizedBy: addressSpace.rootFolder.objects,
      nodeId: "s=Machine",
      browseName: "Machine",
    });
    for (const [name, dataType, init, writable] of VARIABLES) {
      const access = writable ? "CurrentRead | CurrentWrite" : "CurrentRead";
      ns.addVariable({
        componentOf: machine,
        nodeId: `s=Machine.${name}`,
        browseName: name,
        dataType: DataType[dataType],
        accessLevel: access,
        userAccessLevel: access,
        value: new Variant({ dataType, value: init }),
      });
    }
    const setValue = (name, dataType, value) => {
      const node = addressSpace.findNode(`ns=2;s=Machine.${name}`);
      node.setValueFromSource(new Variant({ dataType, value }));
    };
    const method = (name, inputArguments, outputArguments, impl) => {
      const m = ns.addMethod(machine, {
        nodeId: `s=Machine.${name}`,
        browseName: name,
        inputArguments,
        outputArguments,
      });
      m.bindMethod(async (inputs, _context) => impl(inputs));
    };
    method(
      "SelectProgram",
      [{ name: "program", dataType: DataType.UInt32, description: { text: "the program number to select" } }],
      [{ name: "ok", dataType: DataType.Boolean, description: { text: "true when selected" } }],
      (inputs) => {
        if (inputs.length !== 1) return { statusCode: StatusCodes.BadArgumentsMissing };
        if (inputs[0].dataType !== DataType.UInt32 || inputs[0].arrayType !== VariantArrayType.Scalar) {
          return { statusCode: StatusCodes.BadInvalidArgument };
        }
        setValue("ProgramNumber", DataType.UInt32, inputs[0].value);
        return { statusCode: StatusCodes.Good, outputArguments: [new Variant({ dataType: DataType.Boolean, value: true })] };
      },
    );
    method("ResetAlarm", [], [], () => ({ statusCode: StatusCodes.Good, outputArguments: [] }));
    method("Unlock", [], [], () => {
      setValue("DoorUnlock", DataType.Boolean, true);
      return { statusCode: StatusCodes.Good, outputArguments: [] };
    });

    // What reached the write and call services, with the result of each item. node-opcua has
    // resolved RegisterNodes aliases before the engine sees the request.
    const engine = server.engine;
    const write = engine.write.bind(engine);
    engine.write = async (context, nodesToWrite) => {
      const results = await write(context, nodesToWrite);
      nodesToWrite.forEach((wv, i) => {
        const dv = wv.value;
        // The node the server acted on: node-opcua finds some nodes under ids that differ from
        // their own (an opaque id with the bytes of a string id, for one).
        const found = addressSpace.findNode(wv.nodeId);
        const requested = wv.nodeId.toString();
        const node = found ? found.nodeId.toString() : requested;
        journal({
          ...base(context, "write"),
          node,
          ...(node !== requested ? { requested } : {}),
          attribute: attributeName(wv.attributeId),
          ...(wv.indexRange && !wv.indexRange.isEmpty() ? { index_range: wv.indexRange.toString() } : {}),
          ...variantJson(dv && dv.value),
          status: results[i] ? results[i].name : "?",
        });
      });
      counts.writes += 1;
      dumpState();
      return results;
    };
    const call = engine.call.bind(engine);
    engine.call = async (context, methodsToCall) => {
      const results = await call(context, methodsToCall);
      methodsToCall.forEach((req, i) => {
        const method = addressSpace.findNode(req.methodId);
        const object = addressSpace.findNode(req.objectId);
        journal({
          ...base(context, "call"),
          object: object ? object.nodeId.toString() : req.objectId.toString(),
          method: method ? method.nodeId.toString() : req.methodId.toString(),
          args: (req.inputArguments || []).map(variantJson),
          status: results[i] && results[i].statusCode ? results[i].statusCode.name : "?",
        });
      });
      counts.calls += 1;
      dumpState();
      return results;
    };
    server.on("create_session", (session) => {
      const register = session.registerNode.bind(session);
      session.registerNode = (nodeId) => {
        const alias = register(nodeId);
        journal({ ...base({ session }, "register"), node: nodeId.toString(), alias: alias.toString() });
        return alias;
      };
    });
    server.on("newChannel", (channel) => {
      journal({ event: "connection", peer: `${channel.remoteAddress}:${channel.remotePort}` });
    });

    await server.start();
    dumpState();
    process.stdout.write(`READY opc.tcp://${args.host}:${args.port}/cnc ns=2\n`);
    const stop = async () => {
      try {
        await server.shutdown(0);
      } finally {
        process.exit(0);
      }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  };
  start().catch((err) => {
    process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
}

main();
