/**
 * A worker thread of the contacts seed: generates the chunks it is asked for (bench/contacts-rows.ts)
 * and posts them back; the main thread inserts them in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { world } from './contacts-data.js';
import { analysisTable, generateChunk, type ChunkParams } from './contacts-rows.js';

const params = workerData as ChunkParams;
const w = world();
const analyses = await analysisTable(w);
parentPort!.on('message', (index: number) => {
  parentPort!.postMessage(generateChunk(w, analyses, params, index));
});
parentPort!.postMessage('ready');
