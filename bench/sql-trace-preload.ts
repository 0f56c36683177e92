/**
 * `node --import tsx --import ./bench/sql-trace-preload.ts …`: traces every SQL statement of the
 * process (bench/sql-trace.ts) and prints where the SQL time went when it exits. Used on the
 * importer with BENCH_IMPORT_TRACE=1 (a second, traced import; never the measured one).
 */
import { installSqlTrace, summaryOnExit } from './sql-trace.js';

installSqlTrace();
summaryOnExit();
